package gobridge

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// go-redis prints its own messages (failed dials, pool retries) to the
// process's stderr through a logger of its own, which would make timely
// noisy in a Python program that configured no logging. In the Python
// module they go to the core's log buffer instead, at debug level, and so
// to the `timely` logger like every other record.
func init() {
	redis.SetLogger(redisLogging{})
}

// redisLogging adapts go-redis's logging interface to the log buffer.
type redisLogging struct{}

func (redisLogging) Printf(ctx context.Context, format string, v ...any) {
	logger.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
