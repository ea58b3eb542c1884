// Package core implements timely's distributed, fair rate limiters on top of
// Redis: a Semaphore (at most n concurrent holders) and a TokenBucket (at
// most n acquisitions per refill period).
//
// The state of each limiter lives in Redis under keys that start with
// "timely:" and share one hash tag, so that every key of a limiter sits in
// one cluster slot. All decisions are taken by Lua scripts that read the
// Redis server's clock (TIME), so the clocks of the clients never matter.
//
// Within one process, each limiter runs one dispatcher goroutine that
// gathers the local waiters and serves them with a few batched script
// calls, whatever their number: waiting costs no connection per waiter.
// Every blocking method takes a context.Context and returns ctx.Err() as is
// when it is cancelled.
//
// The package knows nothing of Python; the gobridge package adapts it.
package core
