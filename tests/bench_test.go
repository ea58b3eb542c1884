package tests

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"timely/core"
)

// The benchmarks drive the Go core alone against a redis-server, without
// Python, to tell the core's costs from the bridge's. Profile them with
//
//	go test ./tests/ -run '^$' -bench . -cpuprofile cpu.out

func benchStore(b *testing.B) *core.Store {
	b.Helper()
	srv := startRedis(b)
	st, err := core.Open(srv.url(), core.StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// BenchmarkSemaphoreSequential is one acquire+release cycle of one
// goroutine on a semaphore nobody else uses.
func BenchmarkSemaphoreSequential(b *testing.B) {
	st := benchStore(b)
	sem, err := core.NewSemaphore(st, "bench-seq", 1, core.SemaphoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer sem.Close()
	ctx := context.Background()
	cycle := func() {
		p, err := sem.Acquire(ctx, core.Forever)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
	cycle() // subscribe and load the scripts
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cycle()
	}
}

// BenchmarkSemaphoreContended is the throughput of 2,000 goroutines
// cycling through a semaphore of capacity 50 with zero hold time.
func BenchmarkSemaphoreContended(b *testing.B) {
	st := benchStore(b)
	sem, err := core.NewSemaphore(st, "bench-contended", 50, core.SemaphoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer sem.Close()
	ctx := context.Background()
	contended(b, 2000, func() error {
		p, err := sem.Acquire(ctx, core.Forever)
		if err != nil {
			return err
		}
		return p.Release(ctx)
	})
}

// BenchmarkBucketContended is the throughput of 5,000 goroutines taking
// tokens from a bucket too large to make anyone wait.
func BenchmarkBucketContended(b *testing.B) {
	st := benchStore(b)
	bucket, err := core.NewTokenBucket(st, "bench-bucket", 1e9, 1e9, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer bucket.Close()
	ctx := context.Background()
	contended(b, 5000, func() error { return bucket.Wait(ctx, core.Forever) })
}

// contended runs b.N calls of op spread over the given number of
// goroutines, all started at once.
func contended(b *testing.B, goroutines int, op func() error) {
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
