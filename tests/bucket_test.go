package tests

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

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
