package tests

import (
	"context"
	"testing"
	"time"

	"timely/core"
)

// TestMemoryTTLsRun checks that keys of the embedded memory:// Redis
// expire on their own, as on a real server: miniredis only moves its
// clock when told, and the Store moves it in step with real time.
func TestMemoryTTLsRun(t *testing.T) {
	st, err := core.Open("memory://"+uniqueName(t), core.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	rdb := st.Client()

	if err := rdb.Set(ctx, "timely:probe", "1", 150*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	sem, err := core.NewSemaphore(st, uniqueName(t), 1, core.SemaphoreOptions{Expiry: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := sem.Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Release(ctx); err != nil {
		t.Fatal(err)
	}
	sem.Close()
	if n := rdb.DBSize(ctx).Val(); n < 2 {
		t.Fatalf("%d keys after use, want the probe and the semaphore's", n)
	}

	// The semaphore's keys live expiry + 1 s after the last call.
	deadline := time.Now().Add(3 * time.Second)
	for rdb.DBSize(ctx).Val() != 0 {
		if time.Now().After(deadline) {
			keys, _ := rdb.Keys(ctx, "*").Result()
			t.Fatalf("keys left 3 s after last use: %v", keys)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSameNameTwiceOnOneStore checks that two semaphores of one name on
// one Store both hear grants, and that closing one leaves the other's
// subscription in place.
func TestSameNameTwiceOnOneStore(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		ctx := context.Background()
		name := uniqueName(t)
		opts := core.SemaphoreOptions{Expiry: 30 * time.Second} // renewals 10 s apart
		open := func(st *core.Store) *core.Semaphore {
			s, err := core.NewSemaphore(st, name, 1, opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		other := core.NewStore(st.Client(), core.StoreOptions{})
		t.Cleanup(func() { other.Close() })
		a, b, c := open(st), open(st), open(other)

		// handOver has from hold the permit and to wait; the release must
		// reach to's waiter through its grant announcement, well before a
		// renewal would find it.
		handOver := func(from, to *core.Semaphore) {
			t.Helper()
			p, err := from.Acquire(ctx, core.Forever)
			if err != nil {
				t.Fatal(err)
			}
			req := to.Start(core.Forever, nil)
			waitQueued(t, to, 1)
			start := time.Now()
			if err := p.Release(ctx); err != nil {
				t.Fatal(err)
			}
			q, err := req.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if waited := time.Since(start); waited > 2*time.Second {
				t.Fatalf("the grant took %v", waited)
			}
			if err := q.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		handOver(c, a)
		handOver(c, b)
		a.Close()
		handOver(c, b)
	})
}
