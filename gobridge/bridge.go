// Package gobridge is the thin surface that gopy binds into timely's
// Python extension module. It holds no limiter logic: it maps handles to
// the core's limiters and requests, and reports completions through a file
// descriptor, so that Go never calls into Python.
//
// Every exported function recovers panics into errors, and every error
// text starts with "[kind] ", a word that the Python side maps to an
// exception class: maxsleep, connection, canceled, closed, leaselost,
// value, forked, internal.
package gobridge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"timely/core"
)

// Version reports the version of the Go core.
func Version() (v string, err error) {
	defer guard(&err)()
	return "0.1.0", nil
}

// gcPercent is the garbage collector's target in the Python process,
// unless GOGC says otherwise. The core's live heap is small (a few MB even
// with 10,000 waiters) and its garbage comes from every acquisition, so
// Go's default of 100 collects very often: 400 cut the Go core's CPU per
// contended cycle by about a sixth (make bench), for a few MB more.
const gcPercent = 400

func init() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// pid is the process that loaded the module. After a fork the child has
// lost the Go runtime's threads: any goroutine it would start hangs, so
// every call there fails with [forked] instead.
var pid = os.Getpid()

var (
	mu        sync.Mutex
	nextID    int64
	stores    = map[string]*core.Store{}
	limiters  = map[int64]limiter{}
	ops       = map[int64]*op{}
	notifiers = map[int64]*notifier{}
)

// limiter is one of the core's limiters behind a handle.
type limiter struct {
	sem    *core.Semaphore
	bucket *core.TokenBucket
}

func newID() int64 {
	nextID++
	return nextID
}

// guard turns a panic into an error and refuses calls in a forked child.
// Use as: defer guard(&err)().
func guard(err *error) func() {
	if os.Getpid() != pid {
		*err = errors.New("[forked] timely's Go core was started in the parent " +
			"process and cannot run in a forked child; build limiters in the child, " +
			"or use them in the parent only after the fork")
		return func() {}
	}
	return func() {
		if p := recover(); p != nil {
			*err = fmt.Errorf("[internal] panic in timely's Go core: %v\n%s", p, debug.Stack())
		}
	}
}

// kind returns the "[kind] " word for an error of the core.
func kind(err error) string {
	switch {
	case errors.Is(err, core.ErrMaxSleep):
		return "maxsleep"
	case errors.Is(err, core.ErrLeaseLost):
		return "leaselost"
	case errors.Is(err, core.ErrCanceled):
		return "canceled"
	case errors.Is(err, core.ErrClosed):
		return "closed"
	case errors.Is(err, core.ErrConnection):
		return "connection"
	case errors.Is(err, core.ErrURL):
		return "value"
	}
	return "internal"
}

// wrap prefixes err with its kind; nil stays nil.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("[%s] %s", kind(err), oneLine(err.Error()))
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// SelfTest panics on purpose when kind is "panic", so that tests can check
// that a panic in the Go core reaches Python as an exception instead of
// ending the interpreter. Any other kind returns nil.
func SelfTest(kind string) (err error) {
	defer guard(&err)()
	if kind == "panic" {
		panic("self-test panic")
	}
	return nil
}

// store returns the shared Store of url; the lock is held.
func store(url string) (*core.Store, error) {
	if s := stores[url]; s != nil {
		return s, nil
	}
	s, err := core.Open(url, core.StoreOptions{Logger: logger})
	if err != nil {
		return nil, err
	}
	stores[url] = s
	return s, nil
}

// NewSemaphore returns the handle of a new semaphore on the Redis at url.
// expiryMs is the lease of its permits. No I/O happens until it is used.
func NewSemaphore(url, name string, capacity, expiryMs int64) (h int64, err error) {
	defer guard(&err)()
	mu.Lock()
	defer mu.Unlock()
	st, err := store(url)
	if err != nil {
		return 0, wrap(err)
	}
	sem, err := core.NewSemaphore(st, name, int(capacity),
		core.SemaphoreOptions{Expiry: time.Duration(expiryMs) * time.Millisecond})
	if err != nil {
		return 0, fmt.Errorf("[value] %w", err)
	}
	h = newID()
	limiters[h] = limiter{sem: sem}
	return h, nil
}

// NewTokenBucket returns the handle of a new token bucket on the Redis at
// url, refilled by refillAmount tokens every refillPeriodUs microseconds.
func NewTokenBucket(url, name string, capacity, refillAmount,
	refillPeriodUs int64) (h int64, err error) {
	defer guard(&err)()
	mu.Lock()
	defer mu.Unlock()
	st, err := store(url)
	if err != nil {
		return 0, wrap(err)
	}
	b, err := core.NewTokenBucket(st, name, int(capacity), int(refillAmount),
		time.Duration(refillPeriodUs)*time.Microsecond)
	if err != nil {
		return 0, fmt.Errorf("[value] %w", err)
	}
	h = newID()
	limiters[h] = limiter{bucket: b}
	return h, nil
}

// CloseLimiter closes a limiter: its waiters fail with [closed] and the
// permits it holds are released.
func CloseLimiter(h int64) (err error) {
	defer guard(&err)()
	mu.Lock()
	l, ok := limiters[h]
	delete(limiters, h)
	mu.Unlock()
	if !ok {
		return nil
	}
	if l.sem != nil {
		return wrap(l.sem.Close())
	}
	return wrap(l.bucket.Close())
}

// Flush waits up to timeoutMs for the releases of every semaphore to have
// their answers from Redis: the Python side calls it when the interpreter
// exits, so that permits released just before go back at once instead of
// when their leases expire. It reports whether all were settled in time.
func Flush(timeoutMs int64) (settled bool, err error) {
	defer guard(&err)()
	ctx, cancel := context.WithTimeout(context.Background(),
		time.Duration(timeoutMs)*time.Millisecond)
	defer cancel()
	return settle(ctx, func(*core.Semaphore) bool { return true }) == nil, nil
}

// settle waits for the releases of the semaphores that match to be
// answered, or for ctx to end.
func settle(ctx context.Context, match func(*core.Semaphore) bool) error {
	mu.Lock()
	var sems []*core.Semaphore
	for _, l := range limiters {
		if l.sem != nil && match(l.sem) {
			sems = append(sems, l.sem)
		}
	}
	mu.Unlock()
	for _, sem := range sems {
		if err := sem.Settle(ctx); err != nil {
			return err
		}
	}
	return nil
}

// SemaphoreState reads a semaphore's state in Redis, as
// "capacity holders waiters".
func SemaphoreState(h int64) (s string, err error) {
	defer guard(&err)()
	l, err := lookup(h)
	if err == nil && l.sem == nil {
		err = fmt.Errorf("[value] handle %d is not a semaphore", h)
	}
	if err != nil {
		return "", err
	}
	return readState(func(ctx context.Context) (string, error) {
		// Every instance of this name in the process counts: a release
		// made through one is seen by a state read through another.
		if err := settle(ctx, func(o *core.Semaphore) bool {
			return o.Name() == l.sem.Name()
		}); err != nil {
			return "", err
		}
		st, err := l.sem.State(ctx)
		return fmt.Sprintf("%d %d %d", st.Capacity, st.Holders, st.Waiters), err
	})
}

// BucketState reads a token bucket's state in Redis, as
// "tokens promised".
func BucketState(h int64) (s string, err error) {
	defer guard(&err)()
	l, err := lookup(h)
	if err == nil && l.bucket == nil {
		err = fmt.Errorf("[value] handle %d is not a token bucket", h)
	}
	if err != nil {
		return "", err
	}
	return readState(func(ctx context.Context) (string, error) {
		st, err := l.bucket.State(ctx)
		return fmt.Sprintf("%d %d", st.Tokens, st.Promised), err
	})
}

// readState runs read within the timeout of a call Python waits for.
func readState(read func(context.Context) (string, error)) (string, error) {
	ctx, cancel := callContext()
	defer cancel()
	s, err := read(ctx)
	if err != nil {
		return "", wrap(err)
	}
	return s, nil
}

func lookup(h int64) (limiter, error) {
	mu.Lock()
	defer mu.Unlock()
	l, ok := limiters[h]
	if !ok {
		return l, fmt.Errorf("[closed] no limiter with handle %d", h)
	}
	return l, nil
}
