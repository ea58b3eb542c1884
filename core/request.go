package core

import (
	"context"
	"sync"
)

// Request is one acquisition under way: a semaphore permit or a bucket
// token. It completes exactly once, with a Permit (semaphore only) or an
// error. Its methods are safe for concurrent use.
type Request struct {
	mu     sync.Mutex
	done   chan struct{}
	permit *Permit
	err    error
	onDone func(*Request)
	cancel func()

	waiting     bool          // Redis has answered that it must wait
	waitingChan chan struct{} // made by the first caller of Waiting
}

func newRequest(onDone func(*Request)) *Request {
	return &Request{done: make(chan struct{}), onDone: onDone}
}

// Done is closed once the request has completed.
func (r *Request) Done() <-chan struct{} { return r.done }

// closedChan is what Waiting returns once the request waits.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Waiting is closed once Redis has answered that the request must wait
// (a semaphore waiter queued, a token due later): from then on it can only
// complete when another process releases, or the token's time comes. A
// caller that waits a little for a quick answer can stop waiting then. A
// request that completes at once is never waiting.
func (r *Request) Waiting() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiting {
		return closedChan
	}
	if r.waitingChan == nil {
		r.waitingChan = make(chan struct{})
	}
	return r.waitingChan
}

// markWaiting records that Redis has answered that the request must wait.
func (r *Request) markWaiting() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.waiting {
		r.waiting = true
		if r.waitingChan != nil {
			close(r.waitingChan)
		}
	}
}

// Result reports the outcome of a completed request: the permit for a
// semaphore (nil for a token bucket) and nil, or an error. Before
// completion it returns nil, nil.
func (r *Request) Result() (*Permit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.permit, r.err
}

// Cancel withdraws the request. A request still waiting completes with
// ErrCanceled and leaves the queue; a semaphore request that had already
// been granted has its permit released; a bucket token not yet due is given
// back when that cannot break the rate (see TokenBucket). Cancel never
// blocks and may be called any number of times.
func (r *Request) Cancel() { r.cancel() }

// Wait blocks until the request completes or ctx is done. When ctx ends
// first, the request is canceled and ctx.Err() is returned as is.
func (r *Request) Wait(ctx context.Context) (*Permit, error) {
	select {
	case <-r.done:
		return r.Result()
	case <-ctx.Done():
		r.Cancel()
		return nil, ctx.Err()
	}
}

// complete records the outcome once; later calls are ignored and report
// false. onDone runs outside the lock, after Done is closed.
func (r *Request) complete(p *Permit, err error) bool {
	r.mu.Lock()
	select {
	case <-r.done:
		r.mu.Unlock()
		return false
	default:
	}
	r.permit, r.err = p, err
	close(r.done)
	r.mu.Unlock()
	if r.onDone != nil {
		r.onDone(r)
	}
	return true
}

// completed reports whether the request already has its outcome.
func (r *Request) completed() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}
