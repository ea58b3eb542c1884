package tests

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"timely/core"
)

// openStore opens a Store on srv, closed when the test ends: another
// process's connections.
func openStore(t *testing.T, srv *redisServer) *core.Store {
	t.Helper()
	st, err := core.Open(srv.url(), core.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// idle lets a dispatcher that has just completed a request finish its
// round: until then a round in the caller's goroutine would wait for it
// and leave the work to it.
func idle() { time.Sleep(20 * time.Millisecond) }

// released returns a release callback and a channel that gets its error.
func released() (func(error), chan error) {
	c := make(chan error, 1)
	return func(err error) { c <- err }, c
}

// cycleNow releases p with the acquisition that StartNow makes within
// budget, and returns the new permit and whether StartNow returned with
// it (the round ran in the caller).
func cycleNow(t *testing.T, sem *core.Semaphore, p *core.Permit,
	budget time.Duration) (*core.Permit, bool) {
	t.Helper()
	p.ReleaseDeferred(nil)
	req := sem.StartNow(core.Forever, nil, budget)
	inline := false
	select {
	case <-req.Done():
		inline = true
	default:
	}
	p, err := req.Wait(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p, inline
}

// answered fails the test unless errs already holds a release's outcome,
// and that outcome is success; missing says what its absence means.
func answered(t *testing.T, errs chan error, cycle int, missing string) {
	t.Helper()
	select {
	case err := <-errs:
		if err != nil {
			t.Fatalf("cycle %d: release: %v", cycle, err)
		}
	default:
		t.Fatalf("cycle %d: %s", cycle, missing)
	}
}

// holdIdle acquires the one permit of a new semaphore on a new Redis and
// lets its dispatcher, which subscribed on the way, go idle.
func holdIdle(t *testing.T) (*core.Semaphore, *core.Permit) {
	t.Helper()
	sem := newSemaphore(t, openStore(t, startRedis(t)), 1, 0)
	p, err := sem.Acquire(context.Background(), core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	idle()
	return sem, p
}

// TestSemaphoreStartNowRunsTheRoundInTheCaller: with the dispatcher idle,
// StartNow returns with the outcome, and the release deferred before it
// rides in the same round.
func TestSemaphoreStartNowRunsTheRoundInTheCaller(t *testing.T) {
	sem, p := holdIdle(t)
	ctx := context.Background()
	var err error
	for i := 0; i < 50; i++ {
		done, errs := released()
		p.ReleaseDeferred(done)
		req := sem.StartNow(core.Forever, nil, 100*time.Millisecond)
		select {
		case <-req.Done():
		default:
			t.Fatalf("cycle %d: StartNow returned before its outcome", i)
		}
		if p, err = req.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		answered(t, errs, i, "the deferred release did not ride with the acquisition")
	}
	waitState(t, sem, core.SemaphoreState{Capacity: 1, Holders: 1})
	p.Release(ctx)
	waitState(t, sem, core.SemaphoreState{Capacity: 1})
}

// TestSemaphoreReleaseNowAnswersInTheCaller: with the dispatcher idle,
// ReleaseNow has its answer by the time it returns.
func TestSemaphoreReleaseNowAnswersInTheCaller(t *testing.T) {
	sem, p := holdIdle(t)
	ctx := context.Background()
	var err error
	for i := 0; i < 20; i++ {
		if i > 0 {
			if p, err = sem.StartNow(core.Forever, nil, 100*time.Millisecond).Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		done, errs := released()
		p.ReleaseNow(done, 100*time.Millisecond)
		answered(t, errs, i, "ReleaseNow returned before its answer")
	}
	waitState(t, sem, core.SemaphoreState{Capacity: 1})
}

// TestSemaphoreStartNowOutOfBudget: when Redis does not answer within the
// caller's budget (here it is frozen), StartNow returns at once; the
// dispatcher then finds out what that call did, which Redis may run before
// or after the dispatcher's own calls. Whatever the order, the acquisition
// gets exactly one permit, the release that rode along is not reported
// lost, and nothing stays held or queued.
func TestSemaphoreStartNowOutOfBudget(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	sem := namedSemaphore(t, openStore(t, srv), name, 1, 0)
	other := namedSemaphore(t, openStore(t, srv), name, 1, 0)
	ctx := context.Background()
	p, err := sem.Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		// A round that comes back in time first, so that the frozen one
		// is written on an open connection (not stuck in its handshake);
		// after a round that got no answer, such rounds pause a while.
		deadline := time.Now().Add(3 * time.Second)
		for inline := false; !inline; {
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: no round ran in the caller again", i)
			}
			time.Sleep(10 * time.Millisecond)
			p, inline = cycleNow(t, sem, p, time.Second)
		}
		done, errs := released()
		p.ReleaseDeferred(done)
		if err := srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		req := sem.StartNow(core.Forever, nil, time.Millisecond)
		if took := time.Since(started); took > 100*time.Millisecond {
			t.Errorf("cycle %d: StartNow held its caller %v against a frozen Redis", i, took)
		}
		// Vary how long the dispatcher's calls wait behind the frozen one.
		time.Sleep(time.Duration(i%4) * 20 * time.Millisecond)
		if err := srv.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if p, err = req.Wait(ctx); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if err := <-errs; err != nil {
			t.Fatalf("cycle %d: the release that rode along: %v", i, err)
		}
		waitState(t, sem, core.SemaphoreState{Capacity: 1, Holders: 1})
		if _, err := other.Acquire(ctx, 0); !errors.Is(err, core.ErrMaxSleep) {
			t.Fatalf("cycle %d: another process got a permit while one was held: %v", i, err)
		}
	}
	p.Release(ctx)
	waitState(t, sem, core.SemaphoreState{Capacity: 1})
}

// TestSemaphoreStrayGrantIsGivenBack: a permit granted in Redis to an id
// of this process that nobody here waits for (as a call whose reply never
// came can leave behind) goes back at once, not when its lease runs out.
func TestSemaphoreStrayGrantIsGivenBack(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	st := openStore(t, srv)
	sem := namedSemaphore(t, st, name, 1, 0)
	other := namedSemaphore(t, openStore(t, srv), name, 1, 0)
	ctx := context.Background()
	p, err := sem.Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	token, _, _ := strings.Cut(p.ID(), ":")
	stray := token + ":stray"
	rdb := st.Client()
	if err := rdb.ZAdd(ctx, "timely:{sem:"+name+"}:queue",
		redis.Z{Score: 0, Member: stray}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(ctx); err != nil { // grants the stray id
		t.Fatal(err)
	}
	q, err := other.Acquire(ctx, 2*time.Second)
	if err != nil {
		t.Fatalf("the permit granted to a stray id was not given back: %v", err)
	}
	q.Release(ctx)
	if n, err := rdb.ZScore(ctx, "timely:{sem:"+name+"}:holders", stray).Result(); err == nil {
		t.Fatalf("the stray id still holds a lease (deadline %v)", n)
	}
}

// slowLink forwards TCP connections to addr, delaying every chunk by
// delay (ns, which may change) in each direction, as a distant Redis
// would, and counts the connections it accepted.
type slowLink struct {
	l        net.Listener
	accepted atomic.Int64
	delay    atomic.Int64
}

func startSlowLink(t *testing.T, addr string, delay time.Duration) *slowLink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := &slowLink{l: l}
	s.delay.Store(int64(delay))
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			out, err := net.Dial("tcp", addr)
			if err != nil {
				in.Close()
				continue
			}
			go delayCopy(out, in, &s.delay)
			go delayCopy(in, out, &s.delay)
		}
	}()
	return s
}

func (s *slowLink) url() string { return "redis://" + s.l.Addr().String() }

// delayCopy copies from src to dst, each chunk delay late, until either
// end closes; then it closes both.
func delayCopy(dst, src net.Conn, delay *atomic.Int64) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// holdBehindSlowLink acquires the one permit of a new semaphore, through
// a Store whose connections go through a slowLink of delay.
func holdBehindSlowLink(t *testing.T, delay time.Duration) (*slowLink, *core.Semaphore, *core.Permit) {
	t.Helper()
	link := startSlowLink(t, startRedis(t).addr(), delay)
	st, err := core.Open(link.url(), core.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sem := newSemaphore(t, st, 1, 0)
	p, err := sem.Acquire(context.Background(), core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	return link, sem, p
}

// TestSemaphoreStartNowLeavesASlowRedisToTheDispatcher: when rounds run
// in the caller get no answer within its budget (a distant Redis), they
// pause for a while, longer after each failure, instead of failing and
// making a new connection on every acquisition.
func TestSemaphoreStartNowLeavesASlowRedisToTheDispatcher(t *testing.T) {
	link, sem, p := holdBehindSlowLink(t, 2*time.Millisecond)
	ctx := context.Background()
	var err error
	before := link.accepted.Load()
	for i := 0; i < 30; i++ {
		done, errs := released()
		p.ReleaseDeferred(done)
		if p, err = sem.StartNow(core.Forever, nil, time.Millisecond).Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-errs; err != nil {
			t.Fatalf("cycle %d: release: %v", i, err)
		}
	}
	// Without the pause, each acquisition made one.
	if n := link.accepted.Load() - before; n > 4 {
		t.Fatalf("30 acquisitions against a slow Redis made %d new connections", n)
	}
	p.Release(ctx)
	waitState(t, sem, core.SemaphoreState{Capacity: 1})
}

// TestSemaphoreStartNowResumesWhenRedisIsQuickAgain: the pause of rounds
// in callers after one got no answer ends as soon as a dispatcher's round
// shows Redis answering quickly, not when the pause (100 ms at least)
// runs out.
func TestSemaphoreStartNowResumesWhenRedisIsQuickAgain(t *testing.T) {
	link, sem, p := holdBehindSlowLink(t, 3*time.Millisecond)
	ctx := context.Background()
	var err error
	// Find a round in the caller that got no answer: it held its caller
	// for its whole budget, and came back without the outcome.
	const budget = time.Millisecond
	var failed time.Time
	for i := 0; failed.IsZero(); i++ {
		if i == 200 {
			t.Fatal("no round in the caller ran out of its budget against a slow Redis")
		}
		p.ReleaseDeferred(nil)
		started := time.Now()
		req := sem.StartNow(core.Forever, nil, budget)
		returned := time.Now()
		select {
		case <-req.Done():
		default:
			if returned.Sub(started) >= budget {
				failed = returned
				link.delay.Store(0)
			}
		}
		if p, err = req.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for {
		time.Sleep(5 * time.Millisecond) // let the dispatcher go idle
		var inline bool
		if p, inline = cycleNow(t, sem, p, 100*time.Millisecond); inline {
			break
		}
		if time.Since(failed) > 90*time.Millisecond {
			t.Fatal("rounds in the caller stayed paused though Redis answered quickly again")
		}
	}
	p.Release(ctx)
	waitState(t, sem, core.SemaphoreState{Capacity: 1})
}
