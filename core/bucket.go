package core

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// TokenBucket is a distributed, fair token bucket: it starts full with
// capacity tokens and gains refillAmount tokens every refill period, never
// above capacity; each acquisition takes one token. Across every process
// using the same name on the same Redis, at most
// capacity + refillAmount * ceil(T / period) acquisitions pass in any
// interval of length T.
//
// Each acquisition reserves its token in Redis when it arrives, so waiters
// are served in the order they asked (FIFO across processes), and then
// sleeps until the token is due: one timer per refill slot, finished by a
// precise sleep, since Go's timers may fire a millisecond late. A waiter
// canceled before its token is due gives the token back when it is the
// last one promised; a token promised earlier becomes a hole that the next
// acquisition to arrive takes, at its time, since later waiters already
// count on the refills after it.
//
// Keys: timely:{bucket:NAME}, a hash, and timely:{bucket:NAME}:holes, a
// sorted set; both expire once the last promised token is due and the
// bucket has had time to refill completely. A TokenBucket is
// safe for concurrent use; its dispatcher goroutine starts on the first
// acquisition and stops on Close.
type TokenBucket struct {
	store    *Store
	name     string
	capacity int
	amount   int
	period   time.Duration
	keys     []string
	head     []any // the ARGV that every bucket script starts with

	mu        sync.Mutex
	started   bool
	closed    bool
	arrivals  []*bucketWaiter
	givebacks []any // due times (us) of canceled waiters' tokens
	slots     map[int64]*bucketSlot
	clock     redisClock // the Redis clock, read by the reserve calls
	kick      chan struct{}
	stop      chan struct{}
	stopped   chan struct{}
	broken    error

	// completed holds the requests completed under mu, to be told once it
	// is released: a round that completes a large batch would otherwise
	// hold up every Start for as long.
	completed []completion
}

// completion is a request's outcome, told outside the lock.
type completion struct {
	req *Request
	err error
}

// unlock releases mu, then completes the requests finished under it.
func (b *TokenBucket) unlock() {
	done := b.completed
	b.completed = nil
	b.mu.Unlock()
	for _, c := range done {
		c.req.complete(nil, c.err)
	}
}

// bucketWaiter is one acquisition on its way; its state moves only forward.
type bucketWaiter struct {
	req      *Request
	maxSleep time.Duration
	due      int64 // when its token is due, in us on the Redis clock
	slot     *bucketSlot
	limit    *time.Timer
	state    waiterState // waiterQueued: sleeping until due
}

// NewTokenBucket returns the bucket called name on store. It does no I/O.
func NewTokenBucket(store *Store, name string, capacity, refillAmount int,
	refillPeriod time.Duration) (*TokenBucket, error) {
	switch {
	case name == "":
		return nil, errors.New("timely: token bucket name must not be empty")
	case capacity < 1:
		return nil, fmt.Errorf("timely: token bucket capacity must be >= 1, not %d", capacity)
	case refillAmount < 1 || refillAmount > capacity:
		return nil, fmt.Errorf("timely: refill amount must be in 1..capacity (%d), not %d",
			capacity, refillAmount)
	case refillPeriod < time.Millisecond:
		return nil, fmt.Errorf("timely: refill period must be >= 1ms, not %v", refillPeriod)
	}
	return &TokenBucket{
		store:    store,
		name:     name,
		capacity: capacity,
		amount:   refillAmount,
		period:   refillPeriod,
		keys:     bucketKeys(name),
		head:     []any{capacity, refillAmount, refillPeriod.Microseconds()},
		slots:    map[int64]*bucketSlot{},
		clock:    newRedisClock(),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}, nil
}

// Name returns the bucket's name.
func (b *TokenBucket) Name() string { return b.name }

// Wait takes a token, waiting for it at most maxSleep (Forever waits
// without limit, 0 only takes a token available at once). It fails with
// ErrMaxSleep, having taken nothing, when the token would come later, or
// returns ctx.Err() when ctx ends first.
func (b *TokenBucket) Wait(ctx context.Context, maxSleep time.Duration) error {
	_, err := b.Start(maxSleep, nil).Wait(ctx)
	return err
}

// Start begins an acquisition without blocking. onDone, if not nil, runs
// once the request completes, on a goroutine of the core; it must not
// block. Cancel the request to give up.
func (b *TokenBucket) Start(maxSleep time.Duration, onDone func(*Request)) *Request {
	req := newRequest(onDone)
	w := &bucketWaiter{req: req, maxSleep: maxSleep}
	req.cancel = func() { b.withdraw(w, ErrCanceled) }
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.broken != nil {
		err := b.broken
		if b.closed {
			err = ErrClosed
		}
		w.state = waiterDone
		req.complete(nil, err)
		return req
	}
	b.arrivals = append(b.arrivals, w)
	if maxSleep > 0 {
		// Only matters when Redis is too slow to answer in time: the
		// script itself refuses a wait longer than maxSleep.
		w.limit = time.AfterFunc(maxSleep, func() { b.withdraw(w, ErrMaxSleep) })
	}
	if !b.started {
		b.started = true
		go b.run()
	}
	b.poke()
	return req
}

// withdraw ends a waiter with err. A token not yet due goes back to the
// bucket when the script finds that safe; a token already due stays taken.
func (b *TokenBucket) withdraw(w *bucketWaiter, err error) {
	b.mu.Lock()
	defer b.unlock()
	switch w.state {
	case waiterNew:
		for i, a := range b.arrivals {
			if a == w {
				b.arrivals = append(b.arrivals[:i], b.arrivals[i+1:]...)
				break
			}
		}
	case waiterSent:
		// The reservation is under way; its reply gives the token back.
	case waiterQueued:
		if err == ErrMaxSleep || w.slot.fired {
			return // the token is due, or was promised within max sleep
		}
		b.givebacks = append(b.givebacks, w.due)
		b.poke()
	default:
		return
	}
	w.state = waiterCanceled
	w.stopLimit()
	b.completed = append(b.completed, completion{w.req, err})
}

func (w *bucketWaiter) stopLimit() {
	if w.limit != nil {
		w.limit.Stop()
	}
}

func (b *TokenBucket) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Close fails the waiters that have no token yet with ErrClosed (their
// tokens go back when safe) and stops the dispatcher.
func (b *TokenBucket) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for _, w := range b.arrivals {
		w.state = waiterCanceled
		b.completed = append(b.completed, completion{w.req, ErrClosed})
	}
	b.arrivals = nil
	started := b.started
	b.unlock()
	if started {
		close(b.stop)
		<-b.stopped
	}
	return nil
}

// run is the dispatcher: each round reserves the tokens of every new
// waiter in one call and gives back canceled waiters' tokens in another.
func (b *TokenBucket) run() {
	defer close(b.stopped)
	defer b.recoverPanic()
	for {
		select {
		case <-b.kick:
		case <-b.stop:
			b.step()
			return
		}
		b.step()
	}
}

func (b *TokenBucket) recoverPanic() {
	p := recover()
	if p == nil {
		return
	}
	err := fmt.Errorf("%w: token bucket %q: %v", ErrInternal, b.name, p)
	b.store.log.Error("timely: dispatcher panic", "bucket", b.name, "panic", fmt.Sprint(p))
	b.mu.Lock()
	defer b.unlock()
	b.broken = err
	for _, w := range b.arrivals {
		w.state = waiterDone
		b.completed = append(b.completed, completion{w.req, err})
	}
}

func (b *TokenBucket) step() {
	b.mu.Lock()
	arrivals, givebacks := b.arrivals, b.givebacks
	b.arrivals, b.givebacks = nil, nil
	for _, w := range arrivals {
		w.state = waiterSent
	}
	b.mu.Unlock()

	if len(givebacks) > 0 {
		b.giveBack(givebacks)
	}
	if len(arrivals) > 0 {
		b.reserve(arrivals)
	}
}

// call runs a bucket script with args appended to the common ARGV.
func (b *TokenBucket) call(ctx context.Context, script *redis.Script, args []any) (any, error) {
	return run(ctx, b.store.rdb, script, b.keys, append(b.head[:3:3], args...)...)
}

// reserve promises a token to each waiter, in arrival order, and sets a
// timer for each token not yet due.
func (b *TokenBucket) reserve(arrivals []*bucketWaiter) {
	args := make([]any, len(arrivals))
	for i, w := range arrivals {
		args[i] = int64(-1)
		if w.maxSleep >= 0 {
			args[i] = w.maxSleep.Microseconds()
		}
	}
	ctx, cancel := context.WithTimeout(background, callTimeout)
	sent := time.Now()
	v, err := b.call(ctx, bucketReserve, args)
	cancel()
	received := time.Now()
	var due []int64
	if err == nil {
		due, err = asInts(v)
	}
	if err == nil && len(due) != len(arrivals)+1 {
		err = fmt.Errorf("%w: %d times for %d waiters", errReply, len(due)-1, len(arrivals))
	}

	b.mu.Lock()
	defer b.unlock()
	if err != nil {
		b.clock.forget()
		for _, w := range arrivals {
			b.finish(w, err)
		}
		return
	}
	now := due[0]
	b.clock.observe(now, sent, received)
	for i, w := range arrivals {
		at := due[i+1]
		switch {
		case at < 0:
			b.finish(w, ErrMaxSleep)
		case w.state == waiterCanceled:
			if at > now {
				b.givebacks = append(b.givebacks, at)
				b.poke()
			}
		case at <= now:
			b.finish(w, nil)
		default:
			w.due, w.state = at, waiterQueued
			w.slot = b.slotLocked(at, b.clock.local(at))
			w.slot.waiters = append(w.slot.waiters, w)
			w.req.markWaiting()
		}
	}
}

// bucketSlot gathers the waiters of this process whose tokens are due at
// one time (a refill), so that one timer serves them all.
type bucketSlot struct {
	due     time.Time // on this process's clock
	waiters []*bucketWaiter
	fired   bool // the lock is held to read or write it
}

// wakeEarly is how long before a slot's time its timer fires, to finish
// with a precise sleep: Go's timers may fire up to a millisecond late.
const wakeEarly = 2 * time.Millisecond

// slotLocked returns the slot of the tokens due at (us, Redis clock),
// starting its timer if it is new. due is that time on our clock, never
// before the Redis clock reaches it (see redisClock), so that no waiter
// ever passes before its token's time.
func (b *TokenBucket) slotLocked(at int64, due time.Time) *bucketSlot {
	if sl := b.slots[at]; sl != nil {
		return sl
	}
	sl := &bucketSlot{due: due}
	b.slots[at] = sl
	time.AfterFunc(time.Until(due)-wakeEarly, func() { b.fire(at, sl) })
	return sl
}

// fire completes the waiters of a slot once its time has come.
func (b *TokenBucket) fire(at int64, sl *bucketSlot) {
	sleepUntil(sl.due)
	b.mu.Lock()
	defer b.unlock()
	sl.fired = true
	delete(b.slots, at)
	for _, w := range sl.waiters {
		if w.state == waiterQueued {
			b.finish(w, nil)
		}
	}
}

// sleepUntil blocks until t with the precision of the OS's own sleep,
// which Go's timers lack; it is only used for the last few milliseconds.
func sleepUntil(t time.Time) {
	for d := time.Until(t); d > 0; d = time.Until(t) {
		ts := syscall.NsecToTimespec(d.Nanoseconds())
		_ = syscall.Nanosleep(&ts, nil) // EINTR: the loop sleeps the rest
	}
}

// finish completes a waiter that is still pending; the lock is held.
func (b *TokenBucket) finish(w *bucketWaiter, err error) {
	if w.state == waiterCanceled || w.state == waiterDone {
		return
	}
	w.state = waiterDone
	w.stopLimit()
	b.completed = append(b.completed, completion{w.req, err})
}

// giveBack returns canceled waiters' tokens in one call. A failure is only
// logged: the tokens then stay spent, which can slow the bucket down but
// never lets it pass too much.
func (b *TokenBucket) giveBack(times []any) {
	ctx, cancel := context.WithTimeout(background, callTimeout)
	defer cancel()
	v, err := b.call(ctx, bucketGiveback, times)
	if err == nil {
		_, err = asInt(v)
	}
	if err != nil {
		b.store.log.Warn("timely: giving back canceled tokens failed",
			"bucket", b.name, "tokens", len(times), "err", err)
	}
}

// TokenBucketState is a snapshot of a token bucket across all processes.
type TokenBucketState struct {
	// Tokens is the number of tokens available now.
	Tokens int
	// Promised is the number of tokens of future refills already promised
	// to waiters.
	Promised int
}

// State reads the bucket's state in Redis without changing it.
func (b *TokenBucket) State(ctx context.Context) (TokenBucketState, error) {
	v, err := b.call(ctx, bucketState, nil)
	if err != nil {
		return TokenBucketState{}, err
	}
	n, err := asInts(v)
	if err == nil && len(n) != 2 {
		err = fmt.Errorf("%w: %d elements, want 2", errReply, len(n))
	}
	if err != nil {
		return TokenBucketState{}, err
	}
	return TokenBucketState{Tokens: int(n[0]), Promised: int(n[1])}, nil
}
