package gobridge

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"timely/core"
)

// op is an acquisition or a release that Python waits for. Its outcome is
// delivered exactly once: returned at once by the call that started it,
// when it completed within that call's wait, or else as a line of its
// notifier (or, without one, to Wait).
type op struct {
	id     int64
	n      *notifier
	req    *core.Request // acquisitions only
	permit *core.Permit  // a semaphore acquisition that succeeded
	err    error

	mu        sync.Mutex
	finished  bool
	done      chan struct{} // made by the first to wait, closed by finish
	inCall    bool          // the starting call is still waiting for it
	delivered bool
}

// Most ops are delivered through a notifier and never waited on, so
// their channel is only made for a waiter; one that comes after the end
// gets this closed one.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func newOp(n *notifier, inCall bool) *op {
	o := &op{n: n, inCall: inCall}
	mu.Lock()
	o.id = newID()
	ops[o.id] = o
	mu.Unlock()
	return o
}

// finish records the outcome and delivers it through the notifier unless
// the starting call is still there to return it.
func (o *op) finish(p *core.Permit, err error) {
	o.mu.Lock()
	o.permit, o.err, o.finished = p, err, true
	if o.done != nil {
		close(o.done)
	}
	deliver := !o.inCall && !o.delivered && o.n != nil
	if deliver {
		o.delivered = true
	}
	o.mu.Unlock()
	if deliver {
		o.n.push(o.line())
		o.forgetIfSpent()
	}
}

// doneChan returns a channel closed once the op has finished.
func (o *op) doneChan() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.finished {
		return closedChan
	}
	if o.done == nil {
		o.done = make(chan struct{})
	}
	return o.done
}

// await gives the outcome to the starting call if it arrives within d,
// and Redis has not answered that the request must wait (the caller's
// thread would then only be held up); otherwise the notifier will deliver
// it. It reports whether it did.
func (o *op) await(d time.Duration) bool {
	if d > 0 {
		var waiting <-chan struct{}
		if o.req != nil {
			waiting = o.req.Waiting()
		}
		t := time.NewTimer(d)
		select {
		case <-o.doneChan():
		case <-waiting:
		case <-t.C:
		}
		t.Stop()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inCall = false
	if o.finished {
		o.delivered = true
	}
	return o.finished
}

func (o *op) line() string {
	if o.err == nil {
		return strconv.FormatInt(o.id, 10) + " ok"
	}
	return fmt.Sprintf("%d %s %s", o.id, kind(o.err), oneLine(o.err.Error()))
}

// forgetIfSpent drops a delivered op that no later call can name: all but
// a semaphore acquisition that holds a permit, which Release names.
func (o *op) forgetIfSpent() {
	if o.permit == nil {
		forget(o.id)
	}
}

func forget(id int64) {
	mu.Lock()
	delete(ops, id)
	mu.Unlock()
}

func opOf(id int64) (*op, error) {
	mu.Lock()
	defer mu.Unlock()
	o := ops[id]
	if o == nil {
		return nil, fmt.Errorf("[closed] no operation %d", id)
	}
	return o, nil
}

// notifierOrNil returns notifier id, or nil for 0 (the caller uses Wait).
func notifierOrNil(id int64) (*notifier, error) {
	if id == 0 {
		return nil, nil
	}
	return notifierOf(id)
}

// Acquire starts an acquisition on limiter h: a semaphore permit or a
// bucket token, waiting at most maxSleepUs microseconds (-1 without limit,
// 0 not at all). It waits up to waitUs itself: if the outcome comes by
// then, it returns -op (done) or the error; otherwise it returns op (> 0),
// and the outcome comes later through notifier nid (or Wait when nid is
// 0). A semaphore op names the permit for Release.
func Acquire(h, nid, maxSleepUs, waitUs int64) (id int64, err error) {
	defer guard(&err)()
	l, err := lookup(h)
	if err != nil {
		return 0, err
	}
	n, err := notifierOrNil(nid)
	if err != nil {
		return 0, err
	}
	o := newOp(n, waitUs > 0)
	maxSleep := core.Forever
	if maxSleepUs >= 0 {
		maxSleep = time.Duration(maxSleepUs) * time.Microsecond
	}
	onDone := func(r *core.Request) { o.finish(r.Result()) }
	wait := time.Duration(waitUs) * time.Microsecond
	if l.sem != nil && wait > 0 {
		// Waiting anyway: run the round here when the dispatcher is idle.
		started := time.Now()
		o.req = l.sem.StartNow(maxSleep, onDone, wait)
		wait -= time.Since(started)
	} else if l.sem != nil {
		o.req = l.sem.Start(maxSleep, onDone)
	} else {
		o.req = l.bucket.Start(maxSleep, onDone)
	}
	if !o.await(wait) {
		return o.id, nil
	}
	o.forgetIfSpent()
	if o.err != nil {
		return 0, wrap(o.err)
	}
	return -o.id, nil
}

// Wait blocks up to timeoutMs for op id and reports whether it completed;
// a failed op returns its error. For ops started without a notifier.
func Wait(id, timeoutMs int64) (ok bool, err error) {
	defer guard(&err)()
	o, err := opOf(id)
	if err != nil {
		return false, err
	}
	t := time.NewTimer(time.Duration(timeoutMs) * time.Millisecond)
	defer t.Stop()
	select {
	case <-o.doneChan():
	case <-t.C:
		return false, nil
	}
	o.mu.Lock()
	o.delivered = true
	o.mu.Unlock()
	o.forgetIfSpent()
	return true, wrap(o.err)
}

// Cancel gives up op id: a waiting acquisition leaves the queue (a bucket
// token not yet due goes back when safe), and a granted permit is
// released in the background. Unknown or finished ops are ignored.
func Cancel(id int64) (err error) {
	defer guard(&err)()
	mu.Lock()
	o := ops[id]
	delete(ops, id)
	mu.Unlock()
	if o != nil && o.req != nil {
		o.req.Cancel()
	}
	return nil
}

// Release gives back the permit of semaphore op id. It waits up to waitUs
// for Redis to confirm: it returns 0 when done by then, or the id (> 0) of
// a release op whose outcome comes through notifier nid (or Wait). A lease
// that had expired fails with [leaselost].
func Release(id, nid, waitUs int64) (rid int64, err error) {
	defer guard(&err)()
	if waitUs <= 0 {
		return release(id, nid, 0, (*core.Permit).ReleaseAsync)
	}
	started := time.Now()
	return release(id, nid, waitUs, func(p *core.Permit, done func(error)) {
		// Waiting anyway: run the round here when the dispatcher is idle.
		p.ReleaseNow(done, time.Duration(waitUs)*time.Microsecond-time.Since(started))
	})
}

// ReleaseDeferred is Release without waiting and without starting a round
// (see core.Permit.ReleaseDeferred): Kick the limiter once after the
// releases of an event loop's turn.
func ReleaseDeferred(id, nid int64) (rid int64, err error) {
	defer guard(&err)()
	return release(id, nid, 0, (*core.Permit).ReleaseDeferred)
}

func release(id, nid, waitUs int64, how func(*core.Permit, func(error))) (int64, error) {
	n, err := notifierOrNil(nid)
	if err != nil {
		return 0, err
	}
	mu.Lock()
	acq := ops[id]
	delete(ops, id)
	mu.Unlock()
	if acq == nil || acq.permit == nil {
		return 0, fmt.Errorf("[value] operation %d holds no permit", id)
	}
	o := newOp(n, waitUs > 0)
	how(acq.permit, func(err error) { o.finish(nil, err) })
	if !o.await(time.Duration(waitUs) * time.Microsecond) {
		return o.id, nil
	}
	forget(o.id)
	return 0, wrap(o.err)
}

// Kick starts a round of semaphore h for the releases deferred so far. A
// closed or unknown handle, or a token bucket, is ignored.
func Kick(h int64) (err error) {
	defer guard(&err)()
	mu.Lock()
	l := limiters[h]
	mu.Unlock()
	if l.sem != nil {
		l.sem.Kick()
	}
	return nil
}

// PermitLost reports whether the permit of semaphore op id was found
// expired while held (see core.Permit.Lost). An op already released or
// unknown fails with [closed].
func PermitLost(id int64) (lost bool, err error) {
	defer guard(&err)()
	o, err := opOf(id)
	if err != nil {
		return false, err
	}
	if o.permit == nil {
		return false, fmt.Errorf("[value] operation %d holds no permit", id)
	}
	select {
	case <-o.permit.Lost():
		return true, nil
	default:
		return false, nil
	}
}

// callContext bounds a call that Python waits for synchronously.
func callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}
