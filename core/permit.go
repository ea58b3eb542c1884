package core

import (
	"context"
	"sync"
	"time"
)

// Permit is one permit of a Semaphore held by this process: a lease in
// Redis that the Semaphore renews in the background until Release. Its
// methods are safe for concurrent use.
type Permit struct {
	id   string
	sem  *Semaphore
	lost chan struct{}

	mu    sync.Mutex
	state permitState
}

type permitState int

const (
	permitHeld permitState = iota
	permitReleased
	permitLost
)

// ID returns the permit's id, unique across processes; it is the member
// of the holders set in Redis.
func (p *Permit) ID() string { return p.id }

// Lost is closed when the permit's lease was found expired while it was
// still held: this process stopped renewing it for longer than the expiry
// (it was frozen, or Redis was out of reach or lost its data), and the
// permit may have passed to another holder. Work guarded by the permit
// should stop.
func (p *Permit) Lost() <-chan struct{} { return p.lost }

// Release gives the permit back and waits for Redis to confirm it, or for
// ctx to end (the release then still completes in the background). It
// returns ErrLeaseLost when the lease had expired: the release then adds
// no capacity. Releasing again returns nil and does nothing.
func (p *Permit) Release(ctx context.Context) error {
	ch := make(chan error, 1)
	p.ReleaseAsync(func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReleaseAsync gives the permit back without blocking; done, if not nil,
// learns the outcome, as for Release, on a goroutine of the core. It must
// not block.
func (p *Permit) ReleaseAsync(done func(error)) {
	p.sem.release(p, done, true)
}

// ReleaseNow is ReleaseAsync for a caller that waits up to budget for the
// answer anyway: as with Semaphore.StartNow, the round runs in the
// calling goroutine when the dispatcher is idle, and done may have run by
// the time it returns.
func (p *Permit) ReleaseNow(done func(error), budget time.Duration) {
	p.sem.release(p, done, false)
	if !p.sem.roundNow(budget) {
		p.sem.poke()
	}
}

// ReleaseDeferred is ReleaseAsync without starting a round: the release
// goes to Redis with the next round of its Semaphore, which the next
// acquisition, a Kick, a Settle or at the latest the next renewal (expiry
// / 3) starts. A caller that releases and acquires again at once, or
// releases many permits together, saves a round trip by kicking once
// after them all.
func (p *Permit) ReleaseDeferred(done func(error)) {
	p.sem.release(p, done, false)
}

// end moves a held permit to its final state and reports whether it was
// still held.
func (p *Permit) end(to permitState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != permitHeld {
		return false
	}
	p.state = to
	if to == permitLost {
		close(p.lost)
	}
	return true
}

// endErr is what releasing an ended permit reports.
func (p *Permit) endErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == permitLost {
		return ErrLeaseLost
	}
	return nil
}
