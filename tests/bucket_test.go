package tests

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"timely/core"
)

func newBucket(t *testing.T, st *core.Store, capacity, amount int, period time.Duration) *core.TokenBucket {
	t.Helper()
	b, err := core.NewTokenBucket(st, uniqueName(t), capacity, amount, period)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// checkConformance fails when some window of length T holds more than
// capacity + amount*ceil(T/period) of the times, allowing slack for the
// jitter of recording them.
func checkConformance(t *testing.T, times []time.Time, capacity, amount int,
	period, slack time.Duration) {
	t.Helper()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	for i := range times {
		for j := i; j < len(times); j++ {
			span := times[j].Sub(times[i]) - slack
			if span < 0 {
				span = 0
			}
			bound := capacity + amount*int(math.Ceil(float64(span)/float64(period)))
			if span == 0 {
				bound = capacity + amount
			}
			if n := j - i + 1; n > bound {
				t.Fatalf("%d acquisitions within %v, bound %d", n, times[j].Sub(times[i]), bound)
			}
		}
	}
}

func TestBucketRateAndConformance(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		const capacity, amount, period, n = 5, 2, 100 * time.Millisecond, 25
		b := newBucket(t, st, capacity, amount, period)
		ctx := context.Background()
		var mu sync.Mutex
		var times []time.Time
		var wg sync.WaitGroup
		start := time.Now()
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := b.Wait(ctx, core.Forever); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				times = append(times, time.Now())
				mu.Unlock()
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		// 5 at once, then 2 per 100 ms: the 25th token comes with the
		// 10th refill, 1 s after the start.
		if elapsed < 900*time.Millisecond || elapsed > 1300*time.Millisecond {
			t.Errorf("%d acquisitions took %v, want about 1s", n, elapsed)
		}
		checkConformance(t, times, capacity, amount, period, 3*time.Millisecond)
	})
}

func TestBucketMaxSleepRefusesAtOnceAndTakesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		b := newBucket(t, st, 1, 1, 2*time.Second)
		ctx := context.Background()
		first := time.Now()
		if err := b.Wait(ctx, core.Forever); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := b.Wait(ctx, 500*time.Millisecond)
		if !errors.Is(err, core.ErrMaxSleep) {
			t.Fatalf("got %v, want ErrMaxSleep", err)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("refusal took %v, want at once", d)
		}
		if err := b.Wait(ctx, core.Forever); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(first); d < 1950*time.Millisecond || d > 2300*time.Millisecond {
			t.Errorf("third acquisition passed %v after the first, want about 2s", d)
		}
	})
}

func TestBucketCanceledLastTokenComesBack(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		b := newBucket(t, st, 1, 1, time.Second)
		ctx := context.Background()
		if err := b.Wait(ctx, 0); err != nil {
			t.Fatal(err)
		}
		req := b.Start(core.Forever, nil)
		deadline := time.Now().Add(2 * time.Second)
		for {
			s, err := b.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if s.Promised == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("state %+v, want one promised token", s)
			}
			time.Sleep(time.Millisecond)
		}
		req.Cancel()
		if _, err := req.Result(); !errors.Is(err, core.ErrCanceled) {
			t.Fatalf("canceled request: %v", err)
		}
		for {
			s, _ := b.State(ctx)
			if s.Promised == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("state %+v, want the token back", s)
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// TestBucketAcrossStores runs 3 stores (as 3 processes would) x 40 waiters
// asking over 2 s: conformance in every window, full rate once the burst
// is spent, and FIFO but for the jitter of reaching Redis.
func TestBucketAcrossStores(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	const capacity, amount, period = 5, 2, 200 * time.Millisecond
	type rec struct{ ask, admit time.Time }
	var mu sync.Mutex
	var recs []rec
	var wg sync.WaitGroup
	for p := 0; p < 3; p++ {
		st, _ := core.Open(srv.url(), core.StoreOptions{})
		defer st.Close()
		b, _ := core.NewTokenBucket(st, name, capacity, amount, period)
		defer b.Close()
		for i := 0; i < 40; i++ {
			wg.Add(1)
			go func(delay time.Duration) {
				defer wg.Done()
				time.Sleep(delay)
				r := rec{ask: time.Now()}
				if err := b.Wait(context.Background(), core.Forever); err != nil {
					t.Error(err)
					return
				}
				r.admit = time.Now()
				mu.Lock()
				recs = append(recs, r)
				mu.Unlock()
			}(time.Duration((p*40+i)*2000/120) * time.Millisecond)
		}
	}
	wg.Wait()
	var admits []time.Time
	for _, r := range recs {
		admits = append(admits, r.admit)
	}
	checkConformance(t, admits, capacity, amount, period, 3*time.Millisecond)
	sort.Slice(admits, func(i, j int) bool { return admits[i].Before(admits[j]) })
	rest := admits[capacity:]
	rate := float64(len(rest)-1) / rest[len(rest)-1].Sub(rest[0]).Seconds()
	if want := 0.95 * amount / period.Seconds(); rate < want {
		t.Errorf("%.2f admissions/s after the burst, want >= %.2f", rate, want)
	}
	const jitter = 25 * time.Millisecond // the way to Redis, on a loaded machine
	for _, a := range recs {
		for _, b := range recs {
			if b.ask.Sub(a.ask) > jitter && a.admit.Sub(b.admit) > jitter {
				t.Fatalf("a waiter asking %v later was admitted %v sooner",
					b.ask.Sub(a.ask), a.admit.Sub(b.admit))
			}
		}
	}
}

// TestBucketCanceledTokensAreReused cancels a waiter in the middle of the
// queue: its token becomes a hole that the next newcomer takes, at the
// canceled waiter's time, without delaying anyone.
func TestBucketCanceledTokensAreReused(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		const period = 300 * time.Millisecond
		b := newBucket(t, st, 1, 1, period)
		ctx := context.Background()
		start := time.Now()
		if err := b.Wait(ctx, 0); err != nil {
			t.Fatal(err)
		}
		middle := b.Start(core.Forever, nil) // due at 1 period
		waitPromised(t, b, 1)
		last := b.Start(core.Forever, nil) // due at 2 periods
		waitPromised(t, b, 2)
		middle.Cancel()
		waitPromised(t, b, 1)
		if err := b.Wait(ctx, core.Forever); err != nil { // takes the hole
			t.Fatal(err)
		}
		if d := time.Since(start); d < period || d > period+150*time.Millisecond {
			t.Errorf("the newcomer was admitted after %v, want at the hole's %v", d, period)
		}
		if _, err := last.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 2*period || d > 2*period+150*time.Millisecond {
			t.Errorf("the last waiter was admitted after %v, want %v", d, 2*period)
		}
	})
}

func waitPromised(t *testing.T, b *core.TokenBucket, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		s, err := b.State(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if s.Promised == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %+v, want %d promised", s, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBucketStateOutlivesItsReservations checks that the bucket's key
// lives until its last promised token is due and it has refilled, so that
// an expiry can never reset a bucket that waiters still count on.
func TestBucketStateOutlivesItsReservations(t *testing.T) {
	srv := startRedis(t)
	st, err := core.Open(srv.url(), core.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := newBucket(t, st, 2, 1, time.Second)
	var reqs []*core.Request
	for i := 0; i < 6; i++ { // 2 now, then due at +1 s .. +4 s
		reqs = append(reqs, b.Start(core.Forever, nil))
	}
	waitPromised(t, b, 4)
	ttl, err := st.Client().PTTL(context.Background(), "timely:{bucket:"+b.Name()+"}").Result()
	if err != nil {
		t.Fatal(err)
	}
	// The last token is due in 4 s, and refilling 2 tokens takes 2 s more.
	if ttl < 5800*time.Millisecond {
		t.Errorf("bucket key expires in %v, before its reservations are served", ttl)
	}
	for _, r := range reqs {
		r.Cancel()
	}
}

// redisOffset returns an upper bound of the Redis clock minus the local
// clock (us since base), from the quickest of a few TIME round trips: the
// server read its clock after the call was sent.
func redisOffset(t *testing.T, rdb *redis.Client, base time.Time) int64 {
	t.Helper()
	best := int64(math.MaxInt64)
	for i := 0; i < 50; i++ {
		sent := time.Since(base).Microseconds()
		now, err := rdb.Time(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		best = min(best, now.UnixMicro()-sent)
	}
	return best
}

// A waiter passes no sooner than its token is due on the Redis clock,
// although its process maps that time onto its own clock from replies
// that may be quick or slow.
func TestBucketNeverBeforeItsTokensTime(t *testing.T) {
	srv := startRedis(t)
	st, err := core.Open(srv.url(), core.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A waiter late by half a period (a stall of this machine) would read
	// as early: 50 ms keeps that far out of reach.
	const period = 50 * time.Millisecond
	b := newBucket(t, st, 1, 1, period)
	base := time.Now()
	var passed []int64 // us since base
	for i := 0; i < 40; i++ {
		if err := b.Wait(context.Background(), core.Forever); err != nil {
			t.Fatal(err)
		}
		passed = append(passed, time.Since(base).Microseconds())
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
	defer rdb.Close()
	slot, err := rdb.HGet(context.Background(), "timely:{bucket:"+b.Name()+"}", "slot").Int64()
	if err != nil {
		t.Fatal(err)
	}
	offset := redisOffset(t, rdb, base)
	// Refills come at slot + k * period on the Redis clock. Each waiter
	// after the first (which found the bucket full) waited for one; at
	// most, the Redis clock read passed + offset when it passed, so a
	// waiter that went early shows up as nearly a whole period late.
	for i, p := range passed[1:] {
		late := time.Duration(((p+offset-slot)%period.Microseconds()+period.Microseconds())%
			period.Microseconds()) * time.Microsecond
		if late > period/2 {
			t.Errorf("waiter %d passed %v before its token was due", i+1, period-late)
		}
	}
}
