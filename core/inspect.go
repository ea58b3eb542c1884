package core

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limiter kinds as Inspect reports them.
const (
	KindSemaphore   = "semaphore"
	KindTokenBucket = "bucket"
)

// LimiterInfo is what Inspect found of one limiter in Redis. The fields of
// the other kind are zero.
type LimiterInfo struct {
	// Kind is KindSemaphore or KindTokenBucket.
	Kind string
	// Name is the name the limiter was created with.
	Name string
	// Capacity is the capacity last written by a process using it: the
	// most holders of a semaphore, the most tokens of a bucket.
	Capacity int

	// Holders and Waiters count a semaphore's live leases and queue places.
	Holders, Waiters int
	// Expiry is the lease of a semaphore's permits.
	Expiry time.Duration

	// Tokens is the number of a bucket's tokens available now; Promised,
	// the tokens of future refills already promised to waiters.
	Tokens, Promised int
	// RefillAmount tokens come back every RefillPeriod.
	RefillAmount int
	RefillPeriod time.Duration
}

// scanCount is the COUNT hint of each SCAN call: keys examined per call.
const scanCount = 1000

// Inspect reads the state of limiters stored in st's Redis, without
// changing it. With no names it finds every limiter by SCAN over the keys
// timely:* (on every master of a cluster), which walks the whole keyspace
// in steps of scanCount keys; with names it looks up each name as a
// semaphore and as a token bucket. Limiters without state (never used, or
// expired) are left out. The result is sorted by name, then kind.
//
// State read at different moments: each limiter is read atomically, but
// the limiters are read one after another.
func Inspect(ctx context.Context, st *Store, names ...string) ([]LimiterInfo, error) {
	ids := map[limiterID]bool{}
	if len(names) == 0 {
		if err := scanLimiters(ctx, st.rdb, ids); err != nil {
			return nil, err
		}
	}
	for _, n := range names {
		ids[limiterID{KindSemaphore, n}] = true
		ids[limiterID{KindTokenBucket, n}] = true
	}

	var found []LimiterInfo
	for id := range ids {
		info, ok, err := inspectOne(ctx, st.rdb, id)
		if err != nil {
			return nil, err
		}
		if ok {
			found = append(found, info)
		}
	}
	slices.SortFunc(found, func(a, b LimiterInfo) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Kind, b.Kind)
	})
	return found, nil
}

// limiterID names one limiter: its kind and name.
type limiterID struct{ kind, name string }

// scanLimiters adds to ids every limiter with a key in rdb: SCAN on each
// master of a cluster, on the one server otherwise.
func scanLimiters(ctx context.Context, rdb redis.UniversalClient, ids map[limiterID]bool) error {
	var mu sync.Mutex
	scan := func(ctx context.Context, c redis.Cmdable) error {
		it := c.Scan(ctx, 0, "timely:*", scanCount).Iterator()
		for it.Next(ctx) {
			if id, ok := parseKey(it.Val()); ok {
				mu.Lock()
				ids[id] = true
				mu.Unlock()
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("%w: scan: %w", ErrConnection, err)
		}
		return nil
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return scan(ctx, c)
		})
	}
	return scan(ctx, rdb)
}

// parseKey tells which limiter a key belongs to. Keys of other shapes
// under timely: (not ours, or of a later version) are not limiters.
func parseKey(key string) (limiterID, bool) {
	rest, ok := strings.CutPrefix(key, "timely:{")
	if !ok {
		return limiterID{}, false
	}
	if rest, ok := strings.CutPrefix(rest, "bucket:"); ok {
		i := strings.LastIndex(rest, "}")
		if i <= 0 {
			return limiterID{}, false
		}
		name := rest[:i]
		if slices.Contains(bucketKeys(name), key) {
			return limiterID{KindTokenBucket, name}, true
		}
		return limiterID{}, false
	}
	if rest, ok := strings.CutPrefix(rest, "sem:"); ok {
		i := strings.LastIndex(rest, "}:")
		if i <= 0 {
			return limiterID{}, false
		}
		name := rest[:i]
		keys, _ := semaphoreKeys(name)
		if slices.Contains(keys, key) {
			return limiterID{KindSemaphore, name}, true
		}
	}
	return limiterID{}, false
}

// inspectOne reads one limiter's state; ok is false when it has none.
func inspectOne(ctx context.Context, rdb redis.UniversalClient, id limiterID) (
	info LimiterInfo, ok bool, err error) {
	if id.kind == KindSemaphore {
		return inspectSemaphore(ctx, rdb, id.name)
	}
	return inspectBucket(ctx, rdb, id.name)
}

// inspectSemaphore reads a semaphore through its state script; the info
// hash, which every acquisition writes, tells whether it has state.
func inspectSemaphore(ctx context.Context, rdb redis.UniversalClient, name string) (
	LimiterInfo, bool, error) {
	keys, _ := semaphoreKeys(name)
	expiry, err := rdb.HGet(ctx, keys[3], "expiry_ms").Int64()
	if err == redis.Nil {
		return LimiterInfo{}, false, nil
	}
	if err != nil {
		return LimiterInfo{}, false, replyOrConnection(ctx, err)
	}
	v, err := run(ctx, rdb, semaphoreState, keys)
	if err != nil {
		return LimiterInfo{}, false, err
	}
	n, err := asInts(v)
	if err == nil && len(n) != 3 {
		err = fmt.Errorf("%w: %d elements, want 3", errReply, len(n))
	}
	if err != nil || n[0] == 0 {
		return LimiterInfo{}, false, err // expired between the two reads
	}
	return LimiterInfo{
		Kind: KindSemaphore, Name: name, Capacity: int(n[0]),
		Holders: int(n[1]), Waiters: int(n[2]),
		Expiry: time.Duration(expiry) * time.Millisecond,
	}, true, nil
}

// inspectBucket reads a bucket's parameters from its hash, then its state
// through the state script with those parameters.
func inspectBucket(ctx context.Context, rdb redis.UniversalClient, name string) (
	LimiterInfo, bool, error) {
	keys := bucketKeys(name)
	params, err := rdb.HMGet(ctx, keys[0], "capacity", "refill_amount", "refill_us").Result()
	if err != nil {
		return LimiterInfo{}, false, replyOrConnection(ctx, err)
	}
	var p [3]int64
	for i, s := range params {
		str, ok := s.(string)
		if !ok {
			return LimiterInfo{}, false, nil // no bucket, or expired meanwhile
		}
		if _, err := fmt.Sscan(str, &p[i]); err != nil {
			return LimiterInfo{}, false, fmt.Errorf("%w: bucket %q field %d is %q",
				errReply, name, i, str)
		}
	}
	v, err := run(ctx, rdb, bucketState, keys, p[0], p[1], p[2])
	if err != nil {
		return LimiterInfo{}, false, err
	}
	n, err := asInts(v)
	if err == nil && len(n) != 2 {
		err = fmt.Errorf("%w: %d elements, want 2", errReply, len(n))
	}
	if err != nil {
		return LimiterInfo{}, false, err
	}
	return LimiterInfo{
		Kind: KindTokenBucket, Name: name, Capacity: int(p[0]),
		Tokens: int(n[0]), Promised: int(n[1]),
		RefillAmount: int(p[1]), RefillPeriod: time.Duration(p[2]) * time.Microsecond,
	}, true, nil
}

// replyOrConnection returns a context error as is and wraps any other
// failure of a plain command in ErrConnection.
func replyOrConnection(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %w", ErrConnection, err)
}
