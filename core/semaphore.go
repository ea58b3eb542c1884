package core

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Forever is the maxSleep that waits without limit.
const Forever time.Duration = -1

// DefaultExpiry is the lease of a permit when SemaphoreOptions.Expiry is 0.
const DefaultExpiry = 10 * time.Second

// callTimeout bounds each script call of a dispatcher, so that a frozen
// Redis fails requests instead of hanging them.
const callTimeout = 5 * time.Second

// lookUpEvery is how many renewals pass between two that look up every
// queued waiter of the process, in case a grant announcement went missing
// without the Pub/Sub connection dropping (a drop makes the next renewal
// look them up at once). The others cost the same however many wait.
const lookUpEvery = 10

// keepEvery is how often a round asks the script to keep (refresh the
// TTLs of) every key of its semaphore; the rounds in between leave the
// TTLs alone unless they create a key. It must stay well under the 1 s
// by which a key's TTL outlasts the entries it covers.
const keepEvery = 250 * time.Millisecond

// minBudget is the least time worth spending on a round in a caller's own
// goroutine (see StartNow): below it, a round would rarely come back in
// time.
const minBudget = 100 * time.Microsecond

// SemaphoreOptions tunes a Semaphore. The zero value gives the defaults.
type SemaphoreOptions struct {
	// Expiry is how long a permit or a queue place outlives the last
	// renewal by its process. Live processes renew every Expiry/3, so a
	// dead, killed or frozen one loses its permits within Expiry. Zero
	// means DefaultExpiry; the least is 100 ms (whole milliseconds count).
	Expiry time.Duration
}

// Semaphore is a distributed, fair counting semaphore: at most capacity
// permits are held at once across every process that uses the same name on
// the same Redis, and waiters are served in the order they asked (FIFO
// across processes, to within the network's jitter).
//
// Each permit is a lease that the Semaphore renews in the background while
// it is held. Keys (all with TTL expiry + 1 s, refreshed by every call):
// timely:{sem:NAME}:holders, :queue, :places and :info. Grants are
// announced on timely:{sem:NAME}:grants:TOKEN, TOKEN being the random
// prefix of this Semaphore's permit ids: a grant wakes only the process
// it is for, however many share the semaphore, and none at all when that
// process's own call made it (the call's reply says so).
//
// A Semaphore is safe for concurrent use. Its dispatcher goroutine starts on
// the first acquisition and stops on Close.
type Semaphore struct {
	store    *Store
	name     string
	capacity int
	expiry   time.Duration
	keys     []string
	channel  string
	idPrefix string
	head     []any // the ARGV that every semaphore script starts with

	// in guards the inbox, what callers hand to the dispatcher. It is
	// only held to append or swap, so that Start and Release never wait
	// for a round's bookkeeping under mu. Lock order: mu, then in.
	in       sync.Mutex
	started  bool
	closed   bool
	broken   error
	nextID   uint64
	arrivals []*semWaiter           // not yet sent to Redis, in arrival order
	leaving  []string               // ids to release or withdraw
	releases map[string]func(error) // callbacks of the releases in leaving
	released uint64                 // releases queued so far

	mu       sync.Mutex
	orphans  map[string]time.Time   // ids whose release failed, and since when
	inflight map[string]func(error) // callbacks of the releases sent
	answered uint64                 // releases queued so far and answered
	sent     map[string]bool        // ids in a call under way; true: granted before its reply
	recheck  bool                   // announcements may have been missed
	waiting  map[string]*semWaiter
	holding  map[string]*Permit
	kick     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}

	// unsure holds the ids whose round ran out of its caller's budget
	// (see StartNow): Redis may run that call later, or may have run it.
	// A waiter among them is looked up, and queued again if Redis does not
	// know it; a release among them is sent again, and an id Redis does
	// not know then counts as released, not as a lost lease.
	unsure map[string]bool

	// turn is held by whoever runs a round or a renewal: the dispatcher,
	// or a caller of StartNow in its own goroutine. The fields marked
	// "turn" belong to its holder.
	turn        sync.Mutex
	subscribed  atomic.Bool   // the grant channel is joined: rounds may queue waiters
	nowPoll     time.Duration // how soon a StartNow round asks the dispatcher to poll, -1: no ask; turn
	renewFailed bool          // the last renewal failed: retry sooner; turn
	renewals    int           // renewals since the last that looked the waiters up; turn
	queueLease  bool          // a queue lease of ours may be in Redis; turn
	keptAt      time.Time     // when the last call that kept every key was sent; turn

	// later holds what must run once mu is released: completions, which
	// run the callers' onDone, and release callbacks. Run under the lock,
	// a round that completes a batch would hold up every Start and
	// Release for as long.
	later []func()
}

// semWaiter is one acquisition on its way; its state moves only forward.
type semWaiter struct {
	id     string
	req    *Request
	wait   bool
	timer  *time.Timer
	state  waiterState
	permit *Permit // once granted, before its request completes
}

type waiterState int

const (
	waiterNew      waiterState = iota // in arrivals
	waiterSent                        // in an acquire call under way
	waiterQueued                      // in waiting, queued in Redis
	waiterDone                        // completed: granted, refused or failed
	waiterCanceled                    // completed by Cancel or timeout
)

// NewSemaphore returns the semaphore called name on store, with capacity
// permits. It does no I/O.
func NewSemaphore(store *Store, name string, capacity int,
	opts SemaphoreOptions) (*Semaphore, error) {
	if name == "" {
		return nil, errors.New("timely: semaphore name must not be empty")
	}
	if capacity < 1 {
		return nil, fmt.Errorf("timely: semaphore capacity must be >= 1, not %d", capacity)
	}
	expiry := opts.Expiry
	if expiry == 0 {
		expiry = DefaultExpiry
	}
	if expiry < 100*time.Millisecond {
		return nil, fmt.Errorf("timely: semaphore expiry must be >= 100ms, not %v", expiry)
	}
	keys, grants := semaphoreKeys(name)
	token := processToken()
	return &Semaphore{
		store:    store,
		name:     name,
		capacity: capacity,
		expiry:   expiry,
		keys:     keys,
		channel:  grants + ":" + token,
		idPrefix: token,
		head:     []any{capacity, expiry.Milliseconds(), grants, token},
		orphans:  map[string]time.Time{},
		sent:     map[string]bool{},
		waiting:  map[string]*semWaiter{},
		holding:  map[string]*Permit{},
		unsure:   map[string]bool{},
		nowPoll:  -1,
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}, nil
}

// processToken returns a random prefix that makes this Semaphore's permit
// ids unique among all processes.
func processToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}

// Name returns the semaphore's name.
func (s *Semaphore) Name() string { return s.name }

// Capacity returns the number of permits this process asks for.
func (s *Semaphore) Capacity() int { return s.capacity }

// Acquire waits for a permit, at most maxSleep (Forever waits without
// limit, 0 takes a permit only if one is free at once). It fails with
// ErrMaxSleep when the time runs out, or returns ctx.Err() when ctx ends
// first; in both cases nothing is held.
func (s *Semaphore) Acquire(ctx context.Context, maxSleep time.Duration) (*Permit, error) {
	return s.Start(maxSleep, nil).Wait(ctx)
}

// Start begins an acquisition without blocking. onDone, if not nil, runs
// once the request completes, on a goroutine of the core; it must not
// block. Cancel the request to give up.
func (s *Semaphore) Start(maxSleep time.Duration, onDone func(*Request)) *Request {
	req := s.start(maxSleep, onDone)
	s.poke()
	return req
}

// StartNow is Start for a caller that waits up to budget for the outcome
// anyway (such as an event loop that gives an uncontended acquisition a
// millisecond): when the dispatcher is idle, the round runs in the
// calling goroutine, bounded by budget, which spares the hand-offs to and
// from the dispatcher's goroutine, each a wake-up of a sleeping thread.
// Otherwise, and when Redis does not answer within budget, it is Start:
// the dispatcher carries on, and looks up what that call did.
func (s *Semaphore) StartNow(maxSleep time.Duration, onDone func(*Request),
	budget time.Duration) *Request {
	req := s.start(maxSleep, onDone)
	if !s.roundNow(budget) {
		s.poke()
	}
	return req
}

// start queues a new acquisition for the next round.
func (s *Semaphore) start(maxSleep time.Duration, onDone func(*Request)) *Request {
	req := newRequest(onDone)
	w := &semWaiter{req: req, wait: maxSleep != 0}
	req.cancel = func() { s.withdraw(w, ErrCanceled) }
	if maxSleep > 0 {
		// Armed before w is queued: withdraw copes with either order.
		w.timer = time.AfterFunc(maxSleep, func() { s.withdraw(w, ErrMaxSleep) })
	}

	s.in.Lock()
	if s.closed || s.broken != nil {
		err := s.broken
		if s.closed {
			err = ErrClosed
		}
		s.in.Unlock()
		s.withdraw(w, err)
		return req
	}
	s.nextID++
	w.id = s.idPrefix + ":" + strconv.FormatUint(s.nextID, 36)
	s.arrivals = append(s.arrivals, w)
	if !s.started {
		s.started = true
		go s.run()
	}
	s.in.Unlock()
	return req
}

// withdraw ends a waiter with err (cancellation or max sleep). It takes
// the lock. A waiter that already holds a permit gives it back instead.
func (s *Semaphore) withdraw(w *semWaiter, err error) {
	s.mu.Lock()
	defer s.unlock()
	switch w.state {
	case waiterNew:
		// Never sent: dropping it from arrivals (if it got there) leaves
		// Redis untouched; the dispatcher skips it if it took it already.
		s.in.Lock()
		for i, a := range s.arrivals {
			if a == w {
				s.arrivals = append(s.arrivals[:i], s.arrivals[i+1:]...)
				break
			}
		}
		s.in.Unlock()
	case waiterSent, waiterQueued:
		// Redis may have granted it already, or do so before our call
		// lands: the leave script releases a permit or withdraws the
		// place, whichever the id has by then.
		delete(s.waiting, w.id)
		s.in.Lock()
		s.leaving = append(s.leaving, w.id)
		s.in.Unlock()
		s.poke()
	case waiterDone:
		if w.permit != nil && err == ErrCanceled {
			s.release(w.permit, nil, true)
		}
		return
	case waiterCanceled:
		return
	}
	w.state = waiterCanceled
	if w.timer != nil {
		w.timer.Stop()
	}
	s.later = append(s.later, func() { w.req.complete(nil, err) })
}

// unlock releases mu, then runs what was queued in later under it.
func (s *Semaphore) unlock() {
	later := s.later
	s.later = nil
	s.mu.Unlock()
	for _, f := range later {
		f()
	}
}

// poke wakes the dispatcher without blocking.
func (s *Semaphore) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close fails every waiter with ErrClosed, releases the permits still held
// in this process (best effort: those it cannot reach expire on their own)
// and stops the dispatcher. It waits at most for one script call.
func (s *Semaphore) Close() error {
	s.mu.Lock()
	s.in.Lock()
	if s.closed {
		s.in.Unlock()
		s.unlock()
		return nil
	}
	s.closed = true
	started := s.started
	arrivals := s.arrivals
	s.arrivals = nil
	for id := range s.waiting {
		s.leaving = append(s.leaving, id)
	}
	for id, p := range s.holding {
		p.end(permitReleased)
		s.leaving = append(s.leaving, id)
	}
	s.in.Unlock()
	for _, w := range arrivals {
		s.finish(w, nil, ErrClosed)
	}
	for _, w := range s.waiting {
		s.finish(w, nil, ErrClosed)
	}
	s.waiting = map[string]*semWaiter{}
	s.holding = map[string]*Permit{}
	s.unlock()
	if started {
		close(s.stop)
		<-s.stopped
	}
	return nil
}

// run is the dispatcher: it serves every waiter of this process with a
// few script calls per round, whatever their number, and renews leases.
func (s *Semaphore) run() {
	defer close(s.stopped)
	defer s.recoverPanic()
	// Leases are renewed every expiry/3 whatever else happens; a poll (the
	// same call) comes earlier when a waiter should look for a dead
	// holder's lease running out.
	renewAt := time.Now().Add(s.renewEvery())
	var pollAt time.Time
	timer := time.NewTimer(s.renewEvery())
	defer timer.Stop()
	subscribed := false
	for {
		wake := renewAt
		if !pollAt.IsZero() && pollAt.Before(wake) {
			wake = pollAt
		}
		timer.Reset(time.Until(wake))
		select {
		case <-s.kick:
		case <-timer.C:
		case <-s.stop:
			s.turn.Lock()
			s.step(false) // one last round for what Close left behind
			s.turn.Unlock()
			if subscribed {
				s.store.hub.unsubscribe(s, s.channel)
			}
			return
		}
		if !subscribed {
			subscribed = s.subscribe()
			s.subscribed.Store(subscribed)
		}
		due := !time.Now().Before(wake)
		s.turn.Lock()
		poll := s.step(due)
		if s.nowPoll >= 0 && (poll < 0 || s.nowPoll < poll) {
			poll = s.nowPoll
		}
		s.nowPoll = -1
		s.turn.Unlock()
		if poll >= 0 {
			at := time.Now().Add(poll)
			if pollAt.IsZero() || at.Before(pollAt) || due {
				pollAt = at
			}
		} else if due {
			pollAt = time.Time{}
		}
		if due {
			renewAt = time.Now().Add(s.renewEvery())
			if s.renewFailed {
				renewAt = time.Now().Add(min(time.Second, s.renewEvery()))
			}
		}
	}
}

func (s *Semaphore) renewEvery() time.Duration { return s.expiry / 3 }

// subscribe joins the grant channel before any waiter is queued, so that
// no announcement for one of ours can go by unheard. On failure the
// waiters of this round fail; the next round tries again.
func (s *Semaphore) subscribe() bool {
	ctx, cancel := context.WithTimeout(background, callTimeout)
	defer cancel()
	err := s.store.hub.subscribe(ctx, s, s.channel, s.notice)
	if err == nil {
		return true
	}
	s.mu.Lock()
	s.in.Lock()
	arrivals := s.arrivals
	s.arrivals = nil
	s.in.Unlock()
	for _, w := range arrivals {
		s.finish(w, nil, err)
	}
	s.unlock()
	return false
}

// notice receives the hub's messages: ids granted by other processes'
// calls, or word that messages may have been lost. Grants complete here,
// on the hub's goroutine, without waiting for the dispatcher's round.
func (s *Semaphore) notice(payload string, resubscribed bool) {
	s.mu.Lock()
	defer s.unlock()
	if resubscribed {
		s.lookUpWaiters() // announcements may have gone by unheard
		return
	}
	for _, id := range strings.Fields(payload) {
		if !strings.HasPrefix(id, s.idPrefix+":") {
			continue // not ours: only a foreign publisher could send it
		}
		if s.grantLocked(id) {
			continue
		}
		if _, ok := s.sent[id]; ok {
			// The grant overtook the reply of the call that queued it,
			// which travels on another connection: the round finds it
			// here.
			s.sent[id] = true
			continue
		}
		s.strayLocked(id)
	}
}

// recoverPanic turns a panic of the dispatcher into the failure of every
// request of this semaphore, instead of the end of the host process.
func (s *Semaphore) recoverPanic() {
	p := recover()
	if p == nil {
		return
	}
	err := fmt.Errorf("%w: semaphore %q: %v", ErrInternal, s.name, p)
	s.store.log.Error("timely: dispatcher panic", "semaphore", s.name, "panic", fmt.Sprint(p))
	s.mu.Lock()
	defer s.unlock()
	s.in.Lock()
	s.broken = err
	arrivals, releases := s.arrivals, s.releases
	s.arrivals, s.releases = nil, nil
	s.answered = s.released // failed below: nothing more to wait for
	s.in.Unlock()
	for _, w := range arrivals {
		s.finish(w, nil, err)
	}
	for _, w := range s.waiting {
		s.finish(w, nil, err)
	}
	for _, m := range []map[string]func(error){releases, s.inflight} {
		for _, done := range m {
			s.later = append(s.later, func() { done(err) })
		}
	}
	s.inflight = nil
}

// step runs one round: the releases and withdrawals, then the new
// arrivals, in one call; then, when due, the renewal. It returns how soon
// to poll for expired leases while waiters are queued, or -1 for no poll.
// turn is held.
func (s *Semaphore) step(renewDue bool) time.Duration {
	leaving, arrivals, released := s.take()
	s.mu.Lock()
	recheck := s.recheck
	s.recheck = false
	s.mu.Unlock()

	poll := time.Duration(-1)
	if len(leaving) > 0 || len(arrivals) > 0 {
		t0 := time.Now()
		var ok bool
		poll, ok = s.round(s.store.rdb, leaving, arrivals, callTimeout)
		s.store.dispatcherDone(time.Since(t0), ok)
	}
	s.mu.Lock()
	s.answered = released
	s.mu.Unlock()
	if renewDue || recheck {
		s.renewals++
		lookUp := recheck || s.renewals >= lookUpEvery
		if lookUp {
			s.renewals = 0
		}
		poll = s.renew(lookUp)
	}
	return poll
}

// roundNow runs the round of StartNow in the calling goroutine, if the
// dispatcher is idle and the grant channel is joined (a waiter the round
// queues must hear its grant), and reports whether it did; nothing is
// left for the dispatcher then, unless Redis did not answer within
// budget. Renewals stay with the dispatcher.
func (s *Semaphore) roundNow(budget time.Duration) bool {
	if budget < minBudget || !s.store.deadlines || !s.store.nowAllowed() ||
		!s.subscribed.Load() || !s.turn.TryLock() {
		return false
	}
	defer s.turn.Unlock()
	s.in.Lock()
	closed := s.closed
	s.in.Unlock()
	if closed {
		return false // Close's last round is the dispatcher's
	}
	leaving, arrivals, released := s.take()
	if len(leaving) == 0 && len(arrivals) == 0 {
		return true
	}
	rdb := s.store.rdb
	if now := s.store.now; now != nil && s.store.nowMu.TryLock() {
		defer s.store.nowMu.Unlock()
		rdb = now
	}
	poll, ok := s.round(rdb, leaving, arrivals, budget)
	s.store.nowDone(ok)
	if !ok {
		return true // put back for the dispatcher, which was poked
	}
	s.mu.Lock()
	s.answered = released
	s.mu.Unlock()
	if poll >= 0 {
		s.nowPoll = poll
		s.poke()
	}
	return true
}

// take empties the inbox for a round: the ids leaving (with the releases
// that failed before, retried until their lease would have ended), the
// arrivals still wanted, and the count of releases queued so far, which
// the round answers.
func (s *Semaphore) take() (leaving []string, arrivals []*semWaiter, released uint64) {
	s.mu.Lock()
	s.in.Lock()
	leaving, taken, releases := s.leaving, s.arrivals, s.releases
	s.leaving, s.arrivals, s.releases = nil, nil, nil
	released = s.released
	s.in.Unlock()
	s.inflight = releases
	for _, w := range taken {
		if w.state == waiterNew { // not withdrawn since it was queued
			w.state = waiterSent
			s.sent[w.id] = false
			arrivals = append(arrivals, w)
		}
	}
	for _, id := range leaving {
		delete(s.holding, id) // released: renew no more
	}
	for id, since := range s.orphans {
		// A lease we failed to release ends by itself after expiry.
		if time.Since(since) > s.expiry {
			delete(s.orphans, id)
		} else {
			leaving = append(leaving, id)
		}
	}
	s.unlock()
	return leaving, arrivals, released
}

// call runs a semaphore script on rdb with the args appended to the
// common ARGV, giving up after timeout.
func (s *Semaphore) call(rdb redis.Scripter, script *redis.Script,
	timeout time.Duration, args []any) ([]any, error) {
	ctx, cancel := context.WithTimeout(background, timeout)
	defer cancel()
	v, err := run(ctx, rdb, script, s.keys, append(s.head[:len(s.head):len(s.head)], args...)...)
	if err != nil {
		return nil, err
	}
	return asSlice(v)
}

// round releases or withdraws the leaving ids and enqueues the arrivals
// in one call on rdb that gives up after timeout, reports each release, and
// completes the arrivals granted or refused at once. It returns how soon
// to look again when some wait, and whether Redis answered. A failed call
// fails the arrivals, unless it had less than callTimeout (a caller's
// budget, see StartNow): then its ids go back to the dispatcher, which
// finds out what the call did.
func (s *Semaphore) round(rdb redis.Scripter, leaving []string, arrivals []*semWaiter,
	timeout time.Duration) (time.Duration, bool) {
	sent := time.Now()
	refresh := sent.Sub(s.keptAt) >= keepEvery
	s.mu.Lock()
	queued := flag(len(s.waiting) > 0)
	s.mu.Unlock()
	s.in.Lock()
	if s.closed {
		queued = "x" // Close's last round: drop the queue lease
	}
	s.in.Unlock()
	args := make([]any, 0, 3+len(leaving)+2*len(arrivals))
	args = append(args, flag(refresh), queued, len(leaving))
	for _, id := range leaving {
		args = append(args, id)
	}
	for _, w := range arrivals {
		wait := "1"
		if !w.wait {
			wait = "0"
		}
		args = append(args, w.id, wait)
	}
	reply, err := s.call(rdb, semaphoreRound, timeout, args)
	var left, statuses []int64
	var granted []string
	var wait int64
	var lost bool
	if err == nil {
		left, statuses, granted, wait, lost, err = parseRoundReply(reply, len(leaving), len(arrivals))
	}
	if err == nil && refresh {
		s.keptAt = sent
	}
	if err == nil && len(arrivals) > 0 {
		s.queueLease = true // the script may have made one: a renewal drops it
	}

	s.mu.Lock()
	defer s.unlock()
	if err != nil && timeout < callTimeout {
		s.putBack(leaving, arrivals)
		return -1, false
	}
	// After this reply a grant finds its waiter queued, and the ids of
	// waiters withdrawn meanwhile are settled by their leave call.
	announced := make([]bool, len(arrivals))
	for i, w := range arrivals {
		announced[i] = s.sent[w.id]
		delete(s.sent, w.id)
	}
	s.settleLeaving(leaving, left, err)
	if err != nil {
		// The call may have run: release whatever it may have taken.
		for _, w := range arrivals {
			if w.state == waiterSent {
				s.orphans[w.id] = time.Now()
				s.finish(w, nil, err)
			}
		}
		// It may also have granted waiters queued earlier, which learn
		// of that only from its reply: a renewal finds them.
		if len(s.waiting) > 0 {
			s.lookUpWaiters()
		}
		return -1, false
	}
	for i, w := range arrivals {
		if w.state != waiterSent {
			continue // withdrawn meanwhile: its leave call settles it
		}
		switch statuses[i] {
		case 1:
			s.finish(w, s.holdLocked(w.id), nil)
		case 0:
			w.state = waiterQueued
			s.waiting[w.id] = w
			if announced[i] {
				s.grantLocked(w.id)
			} else {
				w.req.markWaiting()
			}
		default:
			s.finish(w, nil, ErrMaxSleep)
		}
	}
	s.grantedLocked(granted)
	if lost {
		s.lookUpWaiters() // they were dropped with the expired queue lease
	}
	return s.pollDelay(wait), true
}

// putBack hands the ids of a round that ran out of its caller's budget to
// the dispatcher. Redis may yet run that call, or may have run it, so
// nothing may be sent as new: the releases go again (an id then unknown
// to Redis counts as released), and the arrivals wait as if queued while
// a renewal looks them up: granted, queued, or else queued again. mu is
// held.
func (s *Semaphore) putBack(leaving []string, arrivals []*semWaiter) {
	s.in.Lock()
	for _, id := range leaving {
		if _, ok := s.orphans[id]; ok {
			continue // every round retries it anyway
		}
		if done, ok := s.inflight[id]; ok {
			if s.releases == nil {
				s.releases = map[string]func(error){}
			}
			s.releases[id] = done
		}
		s.unsure[id] = true
		s.leaving = append(s.leaving, id)
	}
	s.in.Unlock()
	s.inflight = nil
	for _, w := range arrivals {
		delete(s.sent, w.id)
		if w.state != waiterSent {
			continue // withdrawn meanwhile: its leave call settles it
		}
		w.state = waiterQueued
		s.waiting[w.id] = w
		s.unsure[w.id] = true
	}
	s.lookUpWaiters()
}

// flag is a script's boolean argument.
func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// lookUpWaiters has the next round followed by a renewal that looks up
// every queued waiter of this process: it completes those granted without
// their announcement reaching us, and queues again those dropped with an
// expired queue lease (the process was frozen for longer than expiry).
// mu is held.
func (s *Semaphore) lookUpWaiters() {
	s.recheck = true
	s.poke()
}

// settleLeaving reports the outcome of each leaving id to its release
// callback, and keeps the ids of a failed call as orphans, retried until
// their lease would have ended. left holds the script's statuses.
func (s *Semaphore) settleLeaving(ids []string, left []int64, err error) {
	for i, id := range ids {
		done := s.inflight[id]
		delete(s.inflight, id)
		result := err
		if err != nil {
			if _, ok := s.orphans[id]; !ok {
				s.orphans[id] = time.Now()
			}
		} else {
			delete(s.orphans, id)
			unsure := s.unsure[id]
			delete(s.unsure, id)
			if left[i] == 0 && done != nil && !unsure {
				result = ErrLeaseLost
				s.store.log.Warn("timely: permit lease had expired before release",
					"semaphore", s.name, "permit", id)
			}
		}
		if done != nil {
			s.later = append(s.later, func() { done(result) })
		}
	}
}

// pollDelay says when to look again while waiters are queued: when the
// earliest lease runs out (its holder may be dead), and at least at every
// renewal. wait is that lease's remaining time in ms, -1 for none.
func (s *Semaphore) pollDelay(wait int64) time.Duration {
	if len(s.waiting) == 0 || wait < 0 {
		return -1
	}
	d := time.Duration(wait)*time.Millisecond + 5*time.Millisecond
	return min(d, s.renewEvery())
}

// renew renews every lease of this process and its queue lease in one
// call, learns of leases lost, and returns how soon to poll again (-1: no
// need before the next renewal). With lookUp, it also looks up the queued
// waiters, for grants whose announcement was missed and places dropped
// with an expired queue lease; otherwise its cost does not grow with them.
func (s *Semaphore) renew(lookUp bool) time.Duration {
	s.mu.Lock()
	queued := len(s.waiting) > 0
	n := len(s.holding)
	if lookUp {
		n += len(s.waiting)
	}
	ids := make([]any, 1, 1+n)
	ids[0] = flag(queued)
	for id := range s.holding {
		ids = append(ids, id)
	}
	if lookUp {
		for id := range s.waiting {
			ids = append(ids, id)
		}
	}
	s.renewFailed = false
	s.unlock()
	if len(ids) == 1 && !queued && !s.queueLease {
		return -1
	}

	sent := time.Now()
	reply, err := s.call(s.store.rdb, semaphoreRenew, callTimeout, ids)
	var statuses []int64
	var granted []string
	var wait int64
	var lost bool
	if err == nil {
		statuses, granted, wait, lost, err = parseGrantReply(reply, len(ids)-1)
	}
	if err != nil {
		s.store.log.Warn("timely: lease renewal failed; retrying",
			"semaphore", s.name, "err", err)
		s.renewFailed = true
		s.failWaiting(err)
		return -1
	}
	s.keptAt = sent
	s.queueLease = queued

	s.mu.Lock()
	defer s.unlock()
	requeued := 0
	for i, v := range ids[1:] {
		id := v.(string)
		if p := s.holding[id]; p != nil && statuses[i] == 0 {
			delete(s.holding, id)
			if p.end(permitLost) { // not released meanwhile
				s.store.log.Warn("timely: permit lease expired while held",
					"semaphore", s.name, "permit", id)
			}
		}
		if w := s.waiting[id]; w != nil {
			unsure := s.unsure[id]
			delete(s.unsure, id)
			switch statuses[i] {
			case 1:
				s.grantLocked(id) // its grant notice was missed
			case 0:
				// The queue place ran out (this process was frozen for
				// longer than expiry): queue again, at the back.
				delete(s.waiting, id)
				w.state = waiterNew
				s.in.Lock()
				s.arrivals = append(s.arrivals, w)
				s.in.Unlock()
				s.poke()
				if !unsure { // else its first call never ran: not news
					requeued++
				}
			}
		}
	}
	if requeued > 0 {
		s.store.log.Warn("timely: queue places expired; queued again",
			"semaphore", s.name, "waiters", requeued)
	}
	s.grantedLocked(granted)
	if lost && !lookUp {
		s.lookUpWaiters() // they were dropped with the expired queue lease
	}
	return s.pollDelay(wait)
}

// failWaiting ends every queued waiter with err: Redis cannot be reached,
// and a waiter must not wait on a queue it cannot see. Their places are
// withdrawn once Redis answers again (or expire). Holders keep their
// permits: a renewal that succeeds within expiry saves their leases.
func (s *Semaphore) failWaiting(err error) {
	s.mu.Lock()
	defer s.unlock()
	for id, w := range s.waiting {
		delete(s.waiting, id)
		s.orphans[id] = time.Now()
		s.finish(w, nil, err)
	}
}

// grantedLocked completes the local waiters among ids granted in Redis.
func (s *Semaphore) grantedLocked(ids []string) {
	for _, id := range ids {
		if !s.grantLocked(id) && strings.HasPrefix(id, s.idPrefix+":") {
			s.strayLocked(id)
		}
	}
}

// strayLocked gives back a permit granted to an id of this process that
// nobody here waits for or holds, unless that id is in a call under way.
// Such a grant comes to a waiter withdrawn meanwhile (its leave call gives
// it back too; the second removal finds nothing), or to an id queued in
// Redis by a call whose reply never came (see putBack), which Redis ran
// after the dispatcher had queued the id again: without this, the permit
// would stay held by nobody until its lease ran out. mu is held.
func (s *Semaphore) strayLocked(id string) {
	if _, ok := s.holding[id]; ok {
		return // granted already: a repeated announcement
	}
	if _, ok := s.sent[id]; ok {
		return
	}
	s.in.Lock()
	if !s.closed {
		s.leaving = append(s.leaving, id)
	}
	s.in.Unlock()
	s.poke()
}

// grantLocked completes the waiter id with its permit, if it is a queued
// waiter of this process, and reports whether it was.
func (s *Semaphore) grantLocked(id string) bool {
	w := s.waiting[id]
	if w == nil {
		return false
	}
	delete(s.waiting, id)
	delete(s.unsure, id)
	s.finish(w, s.holdLocked(id), nil)
	return true
}

// holdLocked records a permit held by this process.
func (s *Semaphore) holdLocked(id string) *Permit {
	p := &Permit{id: id, sem: s, lost: make(chan struct{})}
	s.holding[id] = p
	return p
}

// finish completes a waiter that is still pending. A permit granted to a
// waiter that was canceled meanwhile is never handed out; the withdraw
// call already queued gives it back.
func (s *Semaphore) finish(w *semWaiter, p *Permit, err error) {
	if w.state == waiterCanceled || w.state == waiterDone {
		return
	}
	w.state, w.permit = waiterDone, p
	if w.timer != nil {
		w.timer.Stop()
	}
	s.later = append(s.later, func() { w.req.complete(p, err) })
}

// release queues the release of p; done, if not nil, learns the outcome
// on a goroutine of the core. With wake, the dispatcher starts a round at
// once; otherwise the release waits for the next one. It takes only the
// inbox lock (mu may be held), so that a release never waits for a
// round's bookkeeping.
func (s *Semaphore) release(p *Permit, done func(error), wake bool) {
	if !p.end(permitReleased) {
		if done != nil {
			done(p.endErr())
		}
		return
	}
	s.in.Lock()
	if s.closed {
		s.in.Unlock()
		if done != nil {
			done(ErrClosed)
		}
		return
	}
	if done != nil {
		if s.releases == nil {
			s.releases = map[string]func(error){}
		}
		s.releases[p.id] = done
	}
	s.leaving = append(s.leaving, p.id)
	s.released++
	s.in.Unlock()
	if wake {
		s.poke()
	}
}

// Kick makes the dispatcher start a round now if anything waits for one,
// such as releases queued by Permit.ReleaseDeferred.
func (s *Semaphore) Kick() { s.poke() }

// parseGrantReply reads {statuses, granted, wait, lost} with n statuses.
func parseGrantReply(reply []any, n int) (
	statuses []int64, granted []string, wait int64, lost bool, err error) {
	if len(reply) != 4 {
		return nil, nil, 0, false, fmt.Errorf("%w: %d elements, want 4", errReply, len(reply))
	}
	if statuses, err = asInts(reply[0]); err != nil {
		return nil, nil, 0, false, err
	}
	if len(statuses) != n {
		return nil, nil, 0, false, fmt.Errorf("%w: %d statuses for %d ids", errReply, len(statuses), n)
	}
	if granted, err = asStrings(reply[1]); err != nil {
		return nil, nil, 0, false, err
	}
	if wait, err = asInt(reply[2]); err != nil {
		return nil, nil, 0, false, err
	}
	lostFlag, err := asInt(reply[3])
	if err != nil {
		return nil, nil, 0, false, err
	}
	return statuses, granted, wait, lostFlag == 1, nil
}

// parseRoundReply reads {left, statuses, granted, wait, lost} with nLeft
// and n entries in the first two.
func parseRoundReply(reply []any, nLeft, n int) (
	left, statuses []int64, granted []string, wait int64, lost bool, err error) {
	if len(reply) != 5 {
		return nil, nil, nil, 0, false, fmt.Errorf("%w: %d elements, want 5", errReply, len(reply))
	}
	if left, err = asInts(reply[0]); err != nil {
		return nil, nil, nil, 0, false, err
	}
	if len(left) != nLeft {
		return nil, nil, nil, 0, false, fmt.Errorf("%w: %d statuses for %d leaving ids",
			errReply, len(left), nLeft)
	}
	statuses, granted, wait, lost, err = parseGrantReply(reply[1:], n)
	return left, statuses, granted, wait, lost, err
}

// SemaphoreState is a snapshot of a semaphore across all processes.
type SemaphoreState struct {
	// Capacity is the capacity last given by an acquiring process, 0 when
	// the semaphore has no state in Redis.
	Capacity int
	// Holders is the number of live leases.
	Holders int
	// Waiters is the number of live queue places.
	Waiters int
}

// Settle waits until every release queued in this process before the
// call has had its answer from Redis (a failed one is retried until its
// lease would have ended), or ctx ends first. Releases run in the
// background; Settle is for a caller that must see them done, such as a
// process about to exit. Releases queued after the call do not delay it.
func (s *Semaphore) Settle(ctx context.Context) error {
	s.in.Lock()
	target := s.released
	s.in.Unlock()
	s.poke() // deferred releases wait for a round
	for {
		s.mu.Lock()
		done := s.answered >= target
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// State reads the semaphore's state in Redis without changing it. The
// releases this process queued before the call are settled first, so
// that the state includes them.
func (s *Semaphore) State(ctx context.Context) (SemaphoreState, error) {
	if err := s.Settle(ctx); err != nil {
		return SemaphoreState{}, err
	}
	v, err := run(ctx, s.store.rdb, semaphoreState, s.keys)
	if err != nil {
		return SemaphoreState{}, err
	}
	n, err := asInts(v)
	if err == nil && len(n) != 3 {
		err = fmt.Errorf("%w: %d elements, want 3", errReply, len(n))
	}
	if err != nil {
		return SemaphoreState{}, err
	}
	return SemaphoreState{Capacity: int(n[0]), Holders: int(n[1]), Waiters: int(n[2])}, nil
}
