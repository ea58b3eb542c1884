package core

import (
	"math"
	"time"
)

// maxDrift is the fastest this process's clock is assumed to run against
// the Redis server's, as a fraction: NTP never slews a clock by more than
// 500 ppm.
const maxDrift = 500e-6

// boundTTL is how long a bound from one reply is used before a newer reply
// replaces it, even a worse one: a failover may have brought a server with
// another clock.
const boundTTL = time.Second

// redisClock maps times on the Redis clock (us, as the scripts' TIME reads
// it) to this process's clock, never early: the local time it returns for
// a Redis time t is one by which the Redis clock has surely reached t.
//
// Each reply that carries the Redis time gives a bound: its script read
// the clock after the call was sent and before the reply came, so Redis
// time minus local time was at least now - received then, and can only
// have shrunk by maxDrift of the time since the call was sent. A slow
// reply gives a loose bound; the best bound of the last second is kept,
// so that one slow reply does not make its waiters late. Not safe for
// concurrent use.
type redisClock struct {
	base  time.Time // local time 0: local times are us since base
	valid bool
	off   int64 // Redis time minus local time was at least off ...
	from  int64 // ... from this local time on, less maxDrift of the time since
}

func newRedisClock() redisClock { return redisClock{base: time.Now()} }

func (c *redisClock) micros(t time.Time) int64 { return t.Sub(c.base).Microseconds() }

// offAt is the bound at local time t.
func (c *redisClock) offAt(t int64) float64 {
	return float64(c.off) - float64(t-c.from)*maxDrift
}

// observe takes in a reply: now, the Redis time its script read, and the
// local times at which the call was sent and the reply received.
func (c *redisClock) observe(now int64, sent, received time.Time) {
	at := c.micros(received) + 1 // rounded up, as sent is rounded down
	next := redisClock{base: c.base, valid: true, off: now - at, from: c.micros(sent)}
	if !c.valid || at-c.from > boundTTL.Microseconds() || next.offAt(at) >= c.offAt(at) {
		*c = next
	}
}

// forget drops the bound, after a failed call: the server may have changed.
func (c *redisClock) forget() { c.valid = false }

// local returns the local time by which the Redis clock has surely
// reached t (us): the least x with x + offAt(x) >= t, rounded up. Call it
// only after observe.
func (c *redisClock) local(t int64) time.Time {
	x := (float64(t-c.off) - float64(c.from)*maxDrift) / (1 - maxDrift)
	return c.base.Add(time.Duration(math.Ceil(x)) * time.Microsecond)
}
