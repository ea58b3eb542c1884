package core

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Each script lives in its own file under scripts/, with a header that
// names its KEYS, ARGV, reply, units and clock. The common preludes are
// prepended here, so that each script sent to Redis stands on its own.

var (
	//go:embed scripts/semaphore_common.lua
	semaphoreCommon string
	//go:embed scripts/semaphore_round.lua
	semaphoreRoundLua string
	//go:embed scripts/semaphore_renew.lua
	semaphoreRenewLua string
	//go:embed scripts/semaphore_state.lua
	semaphoreStateLua string
	//go:embed scripts/bucket_common.lua
	bucketCommon string
	//go:embed scripts/bucket_reserve.lua
	bucketReserveLua string
	//go:embed scripts/bucket_giveback.lua
	bucketGivebackLua string
	//go:embed scripts/bucket_state.lua
	bucketStateLua string
)

var (
	semaphoreRound = redis.NewScript(semaphoreCommon + semaphoreRoundLua)
	semaphoreRenew = redis.NewScript(semaphoreCommon + semaphoreRenewLua)
	semaphoreState = redis.NewScript(semaphoreCommon + semaphoreStateLua)
	bucketReserve  = redis.NewScript(bucketCommon + bucketReserveLua)
	bucketGiveback = redis.NewScript(bucketCommon + bucketGivebackLua)
	bucketState    = redis.NewScript(bucketCommon + bucketStateLua)
)

// errReply is wrapped around every reply whose shape differs from what the
// script promises; it means a bug or a foreign key, never a network fault.
var errReply = errors.New("timely: unexpected script reply")

// run runs a script (EVALSHA, loading it on NOSCRIPT) and wraps a failure
// in ErrConnection. A context error is returned as is.
func run(ctx context.Context, rdb redis.Scripter, s *redis.Script,
	keys []string, args ...any) (any, error) {
	v, err := s.Run(ctx, rdb, keys, args...).Result()
	if err == nil {
		return v, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		// go-redis reloads its slot map on MOVED and ASK, but not when a
		// master stops answering: after a failover it would go on dialling
		// the dead master until its periodic reload, a minute later. The
		// reload runs in the background, at most one at a time.
		cc.ReloadState(ctx)
	}
	return nil, fmt.Errorf("%w: %w", ErrConnection, err)
}

// Reply parsing: every type assertion is checked, since a panic here would
// travel through cgo and kill the host process.

func asSlice(v any) ([]any, error) {
	s, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %T where an array was expected", errReply, v)
	}
	return s, nil
}

func asInt(v any) (int64, error) {
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("%w: %T where an integer was expected", errReply, v)
	}
	return n, nil
}

func asInts(v any) ([]int64, error) {
	s, err := asSlice(v)
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(s))
	for i, x := range s {
		if out[i], err = asInt(x); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func asStrings(v any) ([]string, error) {
	s, err := asSlice(v)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(s))
	for i, x := range s {
		str, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %T where a string was expected", errReply, x)
		}
		out[i] = str
	}
	return out, nil
}
