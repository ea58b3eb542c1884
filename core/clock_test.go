package core

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// simulatedRedis is a Redis clock that runs at a rate within maxDrift of
// the local one: redis(x) for local time x in us since base.
type simulatedRedis struct {
	offset float64 // us
	rate   float64 // Redis us per local us
}

func (s simulatedRedis) at(x float64) float64 { return s.offset + x*s.rate }

// Whatever the lags of the replies and the drift of the clocks (within
// maxDrift), the local time given for a Redis time is never before the
// Redis clock reaches it.
func TestRedisClockNeverEarly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Unix(1_000_000, 0)
	for trial := 0; trial < 200; trial++ {
		srv := simulatedRedis{
			offset: rng.Float64() * 1e12,
			rate:   1 + (2*rng.Float64()-1)*maxDrift,
		}
		c := redisClock{base: base}
		x := 1000.0 // local us
		for call := 0; call < 200; call++ {
			x += rng.Float64() * 30_000 // the gap between calls
			sent := x
			read := sent + rng.ExpFloat64()*300 // the script reads TIME
			received := read + rng.ExpFloat64()*300
			x = received
			now := int64(math.Floor(srv.at(read)))
			c.observe(now, base.Add(time.Duration(sent*1e3)), base.Add(time.Duration(received*1e3)))
			due := now + int64(rng.Float64()*100_000)
			local := float64(c.local(due).Sub(base).Nanoseconds()) / 1e3
			if got := srv.at(local); got < float64(due) {
				t.Fatalf("trial %d call %d: due at %d on the Redis clock, "+
					"mapped to a local time when it reads %.3f", trial, call, due, got)
			}
		}
	}
}

// One quick reply among slow ones sets the bound for the next second: the
// waiters of later slow replies are not made late by their lag.
func TestRedisClockKeepsTheBestRecentBound(t *testing.T) {
	base := time.Unix(1_000_000, 0)
	c := redisClock{base: base}
	us := func(x int64) time.Time { return base.Add(time.Duration(x) * time.Microsecond) }
	const offset = 5_000_000 // Redis time minus local time, exactly

	// A quick reply: TIME read at 1,050, received at 1,100.
	c.observe(1_050+offset, us(1_000), us(1_100))
	// A slow one 20 ms later: TIME read at 21,050, received at 23,000.
	c.observe(21_050+offset, us(21_000), us(23_000))
	due := int64(40_000 + offset)
	late := c.local(due).Sub(us(40_000))
	if late < 0 || late > 100*time.Microsecond {
		t.Fatalf("due at local 40,000 us, mapped %v after it; want under 100us (the quick reply's bound)", late)
	}

	// After a second, the old bound gives way to a fresh one, however slow.
	c.observe(2_000_050+offset, us(2_000_000), us(2_002_000))
	due = 2_050_000 + offset
	late = c.local(due).Sub(us(2_050_000))
	if late < 1900*time.Microsecond {
		t.Fatalf("an old bound was kept past a second: mapped %v late, want about 2ms", late)
	}

	// A failed call drops the bound: the next reply sets it alone.
	c.forget()
	c.observe(2_100_050+offset, us(2_100_000), us(2_100_060))
	if late = c.local(2_200_000 + offset).Sub(us(2_200_000)); late > 100*time.Microsecond {
		t.Fatalf("after forget, mapped %v late, want the new quick reply's bound", late)
	}
}
