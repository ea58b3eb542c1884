package tests

import (
	"context"
	"testing"
	"time"

	"timely/core"
)

// inspectUntil calls Inspect until ok accepts its result, for a few seconds.
func inspectUntil(t *testing.T, st *core.Store, ok func([]core.LimiterInfo) bool,
	names ...string) []core.LimiterInfo {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		found, err := core.Inspect(context.Background(), st, names...)
		if err != nil {
			t.Fatal(err)
		}
		if ok(found) || time.Now().After(deadline) {
			return found
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInspectFindsLimitersAndTheirState(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		ctx := context.Background()
		sem := newSemaphore(t, st, 2, 3*time.Second)
		for i := 0; i < 2; i++ {
			if _, err := sem.Acquire(ctx, core.Forever); err != nil {
				t.Fatal(err)
			}
		}
		waiter := sem.Start(core.Forever, nil)
		defer waiter.Cancel()

		bucket, err := core.NewTokenBucket(st, uniqueName(t), 5, 1, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bucket.Close() })
		for i := 0; i < 2; i++ {
			if err := bucket.Wait(ctx, core.Forever); err != nil {
				t.Fatal(err)
			}
		}

		// Keys under timely: that are no limiter's are not reported.
		rdb := st.Client()
		for _, k := range []string{"timely:other", "timely:{sem:x}:other",
			"timely:{bucket:}", "timely:{nothing:y}"} {
			if err := rdb.Set(ctx, k, "1", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		}

		want := []core.LimiterInfo{
			{Kind: core.KindSemaphore, Name: sem.Name(), Capacity: 2, Holders: 2,
				Waiters: 1, Expiry: 3 * time.Second},
			{Kind: core.KindTokenBucket, Name: bucket.Name(), Capacity: 5, Tokens: 3,
				RefillAmount: 1, RefillPeriod: time.Hour},
		}
		if want[1].Name < want[0].Name {
			want[0], want[1] = want[1], want[0]
		}
		all := inspectUntil(t, st, func(f []core.LimiterInfo) bool {
			return len(f) == 2 && f[0] == want[0] && f[1] == want[1]
		})
		if len(all) != 2 || all[0] != want[0] || all[1] != want[1] {
			t.Fatalf("Inspect() = %+v, want %+v", all, want)
		}

		one, err := core.Inspect(ctx, st, bucket.Name(), "no-such-limiter")
		if err != nil {
			t.Fatal(err)
		}
		if len(one) != 1 || one[0].Kind != core.KindTokenBucket || one[0].Tokens != 3 {
			t.Errorf("Inspect(%q, missing) = %+v, want only the bucket", bucket.Name(), one)
		}
	})
}

func TestInspectShowsPromisedTokens(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		bucket, err := core.NewTokenBucket(st, uniqueName(t), 1, 1, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bucket.Close() })
		if err := bucket.Wait(context.Background(), core.Forever); err != nil {
			t.Fatal(err)
		}
		late := bucket.Start(core.Forever, nil) // due in an hour
		defer late.Cancel()

		found := inspectUntil(t, st, func(f []core.LimiterInfo) bool {
			return len(f) == 1 && f[0].Promised == 1
		}, bucket.Name())
		if len(found) != 1 || found[0].Tokens != 0 || found[0].Promised != 1 {
			t.Fatalf("Inspect = %+v, want 0 tokens and 1 promised", found)
		}
	})
}

func TestInspectEmptyRedis(t *testing.T) {
	eachBackend(t, func(t *testing.T, st *core.Store) {
		found, err := core.Inspect(context.Background(), st)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) != 0 {
			t.Errorf("Inspect on an empty Redis = %+v", found)
		}
	})
}
