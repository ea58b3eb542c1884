package tests

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"timely/core"
)

func newSemaphore(t *testing.T, st *core.Store, capacity int, expiry time.Duration) *core.Semaphore {
	t.Helper()
	return namedSemaphore(t, st, uniqueName(t), capacity, expiry)
}

// namedSemaphore opens semaphore name on st, closed when the test ends;
// each call stands for another process using it.
func namedSemaphore(t *testing.T, st *core.Store, name string, capacity int,
	expiry time.Duration) *core.Semaphore {
	t.Helper()
	s, err := core.NewSemaphore(st, name, capacity, core.SemaphoreOptions{Expiry: expiry})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSemaphoreNeverExceedsCapacity(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		const capacity, workers = 3, 200
		sem := newSemaphore(t, st, capacity, 0)
		ctx := context.Background()
		var inside, most atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < workers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := sem.Acquire(ctx, core.Forever)
				if err != nil {
					t.Error(err)
					return
				}
				n := inside.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				if err := p.Release(ctx); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if most.Load() != capacity {
			t.Errorf("at most %d holders at once, want exactly %d", most.Load(), capacity)
		}
		state, err := sem.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if state.Holders != 0 || state.Waiters != 0 || state.Capacity != capacity {
			t.Errorf("state after all released = %+v", state)
		}
	})
}

func TestSemaphoreFIFOWithinProcess(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		sem := newSemaphore(t, st, 1, 0)
		ctx := context.Background()
		first, err := sem.Acquire(ctx, core.Forever)
		if err != nil {
			t.Fatal(err)
		}
		var order []int
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			req := sem.Start(core.Forever, nil)
			// Let each request reach Redis before the next one starts.
			waitQueued(t, sem, i+1)
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				p, err := req.Wait(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				p.Release(ctx)
			}(i)
		}
		first.Release(ctx)
		wg.Wait()
		for i, v := range order {
			if v != i {
				t.Fatalf("grant order %v, want arrival order", order)
			}
		}
	})
}

// waitState waits until the semaphore's state is want.
func waitState(t *testing.T, sem *core.Semaphore, want core.SemaphoreState) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := sem.State(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %+v, want %+v", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitQueued waits until n waiters are queued in Redis.
func waitQueued(t *testing.T, sem *core.Semaphore, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := sem.State(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if s.Waiters >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters queued, want %d", s.Waiters, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSemaphoreMaxSleep(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		sem := newSemaphore(t, st, 1, 0)
		ctx := context.Background()
		p, err := sem.Acquire(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sem.Acquire(ctx, 0); !errors.Is(err, core.ErrMaxSleep) {
			t.Errorf("max sleep 0 on a full semaphore: %v, want ErrMaxSleep", err)
		}
		start := time.Now()
		if _, err := sem.Acquire(ctx, 100*time.Millisecond); !errors.Is(err, core.ErrMaxSleep) {
			t.Errorf("max sleep 100ms on a full semaphore: %v, want ErrMaxSleep", err)
		}
		if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
			t.Errorf("max sleep 100ms took %v", d)
		}
		// The timed-out waiter leaves the queue in the background.
		waitState(t, sem, core.SemaphoreState{Capacity: 1, Holders: 1})
		if err := p.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := sem.Acquire(ctx, 0); err != nil {
			t.Errorf("max sleep 0 on a free semaphore: %v", err)
		}
	})
}

func TestSemaphoreCancelLeavesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		sem := newSemaphore(t, st, 2, 0)
		ctx := context.Background()
		// A first use subscribes to the grant channel, which can take
		// longer than the shortest waits below.
		if p, err := sem.Acquire(ctx, core.Forever); err != nil {
			t.Fatal(err)
		} else {
			p.Release(ctx)
		}
		var wg sync.WaitGroup
		var held, canceled atomic.Int64
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				// Waits of 0-20 ms end at every stage of a request; every
				// tenth waits long enough to be served however slow the
				// machine, so that both outcomes always occur.
				wait := time.Duration(i%21) * time.Millisecond
				if i%10 == 9 {
					wait = 10 * time.Second
				}
				cctx, cancel := context.WithTimeout(ctx, wait)
				defer cancel()
				p, err := sem.Acquire(cctx, core.Forever)
				if err == nil {
					held.Add(1)
					time.Sleep(time.Millisecond)
					p.Release(ctx)
				} else if errors.Is(err, context.DeadlineExceeded) {
					canceled.Add(1)
				} else {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		if held.Load() == 0 || canceled.Load() == 0 {
			t.Fatalf("%d held, %d canceled: the test needs both", held.Load(), canceled.Load())
		}
		waitState(t, sem, core.SemaphoreState{Capacity: 2})
		p1, err1 := sem.Acquire(ctx, 0)
		p2, err2 := sem.Acquire(ctx, 0)
		if err1 != nil || err2 != nil {
			t.Fatalf("both permits should be free: %v, %v", err1, err2)
		}
		p1.Release(ctx)
		p2.Release(ctx)
	})
}

func TestSemaphoreExpiredLeaseIsReported(t *testing.T) {
	srv := startRedis(t)
	st, err := core.Open(srv.url(), core.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sem := newSemaphore(t, st, 1, 300*time.Millisecond)
	ctx := context.Background()
	p, err := sem.Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	// A long hold outlives many expiries: the lease is renewed.
	time.Sleep(time.Second)
	if _, err := sem.Acquire(ctx, 0); !errors.Is(err, core.ErrMaxSleep) {
		t.Fatalf("a renewed permit was handed out again: %v", err)
	}
	// Losing the data (as a restart would) loses the lease: it is reported
	// and the release adds no capacity.
	st.Client().FlushAll(ctx)
	select {
	case <-p.Lost():
	case <-time.After(2 * time.Second):
		t.Fatal("lost lease was not reported")
	}
	if err := p.Release(ctx); !errors.Is(err, core.ErrLeaseLost) {
		t.Errorf("release of a lost permit: %v, want ErrLeaseLost", err)
	}
}

// TestSemaphoreReleaseBeforeNewArrival: a release and a new acquisition
// of one process often travel in one round; the waiter of another process
// queued before that acquisition still comes first.
func TestSemaphoreReleaseBeforeNewArrival(t *testing.T) {
	sems := semaphoresOnStores(t, startRedis(t), uniqueName(t), 1, 2)
	a, b := sems[0], sems[1]
	ctx := context.Background()
	held, err := a.Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		other := b.Start(core.Forever, nil)
		waitQueued(t, a, 1)
		held.ReleaseAsync(nil)
		again := a.Start(core.Forever, nil) // right behind the release
		p, err := other.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-again.Done():
			t.Fatalf("round %d: the later arrival got the permit held by the earlier waiter", i)
		case <-time.After(20 * time.Millisecond):
		}
		if err := p.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if held, err = again.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// State settles this process's releases first: none is left counted.
	held.ReleaseAsync(nil)
	if s, err := a.State(ctx); err != nil || s.Holders != 0 {
		t.Fatalf("state right after the release = %+v, %v; want no holder", s, err)
	}
}

// scriptSizes is a go-redis hook that records the number of arguments of
// every script call.
type scriptSizes struct {
	mu    sync.Mutex
	sizes []int
}

func (h *scriptSizes) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptSizes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			h.mu.Lock()
			h.sizes = append(h.sizes, len(cmd.Args()))
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (h *scriptSizes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *scriptSizes) since(k int) []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.sizes[k:]...)
}

// Renewals keep a process's waiters queued with one lease for them all:
// their size does not grow with the number of waiters, so that thousands
// of waiters do not stall Redis at every renewal. Only one renewal in ten
// looks every waiter up, as a safety net for a lost announcement.
func TestSemaphoreRenewalDoesNotGrowWithWaiters(t *testing.T) {
	srv := startRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
	t.Cleanup(func() { rdb.Close() })
	hook := &scriptSizes{}
	rdb.AddHook(hook)
	st := core.NewStore(rdb, core.StoreOptions{})
	t.Cleanup(func() { st.Close() })
	const waiters = 2000
	const expiry = 300 * time.Millisecond // renewals every 100 ms
	sem := newSemaphore(t, st, 1, expiry)
	ctx := context.Background()
	p, err := sem.Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]*core.Request, waiters)
	for i := range reqs {
		reqs[i] = sem.Start(core.Forever, nil)
	}
	waitQueued(t, sem, waiters)
	k := len(hook.since(0))
	time.Sleep(4 * expiry) // about ten renewals
	calls := hook.since(k)
	if len(calls) < 5 {
		t.Fatalf("%d script calls in %v, want renewals every %v", len(calls), 4*expiry, expiry/3)
	}
	large := 0
	for _, n := range calls {
		if n > 20 {
			large++
		}
	}
	if large > len(calls)/10+1 {
		t.Fatalf("%d of %d script calls carried the %d waiters: renewals grow with them",
			large, len(calls), waiters)
	}
	// Every waiter is still queued, and served in turn.
	waitQueued(t, sem, waiters)
	for _, r := range reqs {
		r.Cancel()
	}
	p.Release(ctx)
}
