package tests

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"timely/core"
)

// checkKeysExpire fails unless every key of the semaphore called name has a
// TTL of at most expiry + 1 s: the scripts only refresh the TTLs of the keys
// they write, and a key written without one would never go away.
func checkKeysExpire(t *testing.T, st *core.Store, name string, expiry time.Duration, step string) {
	t.Helper()
	ctx := context.Background()
	keys, err := st.Client().Keys(ctx, "timely:{sem:"+name+"}:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatalf("%s: the semaphore has no keys", step)
	}
	for _, key := range keys {
		ttl, err := st.Client().PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 || ttl > expiry+time.Second {
			t.Errorf("%s: %s has TTL %v, want in (0, %v]", step, key, ttl, expiry+time.Second)
		}
	}
}

func TestSemaphoreKeysAlwaysExpire(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		const expiry = 2 * time.Second
		name := uniqueName(t)
		// Two instances stand for two processes: grants between them go
		// through the channel.
		a := namedSemaphore(t, st, name, 2, expiry)
		b := namedSemaphore(t, st, name, 2, expiry)
		ctx := context.Background()

		p1, err := a.Acquire(ctx, core.Forever)
		if err != nil {
			t.Fatal(err)
		}
		checkKeysExpire(t, st, name, expiry, "one permit held")
		p2, err := a.Acquire(ctx, core.Forever)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Acquire(ctx, 0); !errors.Is(err, core.ErrMaxSleep) {
			t.Fatalf("max sleep 0 on a full semaphore: %v, want ErrMaxSleep", err)
		}
		waitState(t, a, core.SemaphoreState{Capacity: 2, Holders: 2})

		req := b.Start(core.Forever, nil)
		waitState(t, a, core.SemaphoreState{Capacity: 2, Holders: 2, Waiters: 1})
		checkKeysExpire(t, st, name, expiry, "full, one waiter")

		if err := p1.Release(ctx); err != nil {
			t.Fatal(err)
		}
		p3, err := req.Wait(ctx)
		if err != nil {
			t.Fatalf("the waiter of the other instance: %v", err)
		}
		checkKeysExpire(t, st, name, expiry, "permit handed over")

		for _, p := range []*core.Permit{p2, p3} {
			if err := p.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		waitState(t, a, core.SemaphoreState{Capacity: 2})
		checkKeysExpire(t, st, name, expiry, "all released")
	})
}

// checkKeysCoverEntries fails unless each key of the semaphore called name
// outlives what it holds: holders and places until their latest deadline,
// info until the queue whose order its arrivals counter keeps.
func checkKeysCoverEntries(t *testing.T, st *core.Store, name string, step int) {
	t.Helper()
	ctx := context.Background()
	rdb := st.Client()
	prefix := "timely:{sem:" + name + "}:"
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// A key deleted between the reads (emptied by a round) reads as no
	// entries and TTL -2; a key without a TTL reads -1 and always fails.
	expiresAt := func(key string) (time.Time, bool) {
		ttl, err := rdb.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl == -1 {
			t.Fatalf("step %d: %s has no TTL", step, key)
		}
		return now.Add(ttl), ttl != -2
	}
	for _, set := range []string{"holders", "places"} {
		last, err := rdb.ZRangeWithScores(ctx, prefix+set, -1, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(last) == 0 {
			continue
		}
		deadline := time.UnixMilli(int64(last[0].Score))
		if end, ok := expiresAt(prefix + set); ok && end.Before(deadline) {
			t.Fatalf("step %d: %s expires at %v, before its entry due at %v",
				step, set, end.Format(time.StampMicro), deadline.Format(time.StampMicro))
		}
	}
	queueEnd, queued := expiresAt(prefix + "queue")
	if !queued {
		return
	}
	infoEnd, ok := expiresAt(prefix + "info")
	if !ok || infoEnd.Before(queueEnd.Add(-100*time.Millisecond)) {
		t.Fatalf("step %d: info expires at %v (present: %v), before the queue at %v",
			step, infoEnd.Format(time.StampMicro), ok, queueEnd.Format(time.StampMicro))
	}
}

// Rounds refresh the TTLs only now and then, and whenever they create a
// key; whatever the order of grants, queueing, releases and withdrawals,
// no key may run out before an entry it holds.
func TestSemaphoreKeysOutliveTheirEntries(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	// Two processes; at the default expiry, renewals (which keep every
	// key) come every 3.3 s, so every round here runs between the
	// rounds' own keeps.
	sems := semaphoresOnStores(t, srv, name, 3, 2)
	st, err := core.Open(srv.url(), core.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rng := rand.New(rand.NewPCG(7, 11))
	ctx := context.Background()
	// Held throughout, so that holders is never emptied and made again
	// (which keeps it): only the keeps every 250 ms cover its new leases.
	long, err := sems[0].Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Release(ctx)
	var held []*core.Permit
	var pending []*core.Request
	end := time.Now().Add(2 * time.Second)
	step := 0
	for ; time.Now().Before(end); step++ {
		switch op := rng.IntN(10); {
		case op < 4:
			pending = append(pending, sems[rng.IntN(2)].Start(core.Forever, nil))
		case op < 8 && len(held) > 0:
			k := rng.IntN(len(held))
			if err := held[k].Release(ctx); err != nil {
				t.Fatalf("step %d: release: %v", step, err)
			}
			held = append(held[:k], held[k+1:]...)
		case len(pending) > 0:
			pending[rng.IntN(len(pending))].Cancel()
		}
		time.Sleep(time.Duration(2+rng.IntN(15)) * time.Millisecond)
		left := pending[:0]
		for _, req := range pending {
			select {
			case <-req.Done():
				if p, _ := req.Result(); p != nil {
					held = append(held, p)
				}
			default:
				left = append(left, req)
			}
		}
		pending = left
		checkKeysCoverEntries(t, st, name, step)
	}
	if step < 60 {
		t.Fatalf("only %d steps in 2 s: too few rounds between keeps", step)
	}
}

// A process whose waiters are all served drops its queue lease at its
// next renewal, and one that closes drops it at once, so that their end
// later costs no pass over the queue.
func TestSemaphoreQueueLeaseGoesWithTheLastWaiter(t *testing.T) {
	srv := startRedis(t)
	st, err := core.Open(srv.url(), core.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const expiry = 1500 * time.Millisecond // renewals every 500 ms
	name := uniqueName(t)
	a := namedSemaphore(t, st, name, 1, expiry)
	b := namedSemaphore(t, st, name, 1, expiry)
	ctx := context.Background()
	p, err := a.Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	req := b.Start(core.Forever, nil)
	waitState(t, a, core.SemaphoreState{Capacity: 1, Holders: 1, Waiters: 1})
	places := "timely:{sem:" + name + "}:places"
	waitLeases(t, st, places, 1, 0, "one process waiting")
	p.Release(ctx)
	if p, err = req.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Release(ctx)
	within := expiry * 4 / 5 // a renewal's time, well before the lease ends
	waitLeases(t, st, places, 0, within, "the served process's queue lease")

	// Closing a process with waiters queued drops its lease at once.
	c := namedSemaphore(t, st, name, 1, expiry)
	c.Start(core.Forever, nil)
	waitLeases(t, st, places, 1, within, "the queue lease of a new waiter")
	c.Close()
	waitLeases(t, st, places, 0, 100*time.Millisecond, "the queue lease of a closed process")
}

// waitLeases waits until the set of queue leases places holds n, at most
// within.
func waitLeases(t *testing.T, st *core.Store, places string, n int64, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := st.Client().ZCard(context.Background(), places).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d queue leases after %v, want %d", what, got, within, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
