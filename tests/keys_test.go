package tests

import (
	"context"
	"errors"
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
		open := func() *core.Semaphore {
			s, err := core.NewSemaphore(st, name, 2, core.SemaphoreOptions{Expiry: expiry})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		// Two instances stand for two processes: grants between them go
		// through the channel.
		a, b := open(), open()
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
