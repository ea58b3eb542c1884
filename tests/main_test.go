package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"timely/core"
)

// helperEnv makes the test binary act as a separate holder process for the
// crash tests, instead of running the tests.
const helperEnv = "TIMELY_TEST_HOLDER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(holderProcess(spec))
	}
	os.Exit(m.Run())
}

// holderSpec is what a holder process is asked to do.
type holderSpec struct {
	URL      string
	Name     string
	Capacity int
	Count    int
	Queue    int // waiters queued after the permits are held
	Expiry   time.Duration
}

// holderProcess takes Count permits, queues Queue more waiters, prints
// "held", and prints "granted" for each waiter as it gets its permit. On a
// line on stdin it releases the Count permits and prints for each whether
// its lease was lost.
func holderProcess(spec string) int {
	var h holderSpec
	if err := json.Unmarshal([]byte(spec), &h); err != nil {
		fmt.Println("bad spec:", err)
		return 2
	}
	st, err := core.Open(h.URL, core.StoreOptions{})
	if err != nil {
		fmt.Println(err)
		return 2
	}
	sem, err := core.NewSemaphore(st, h.Name, h.Capacity, core.SemaphoreOptions{Expiry: h.Expiry})
	if err != nil {
		fmt.Println(err)
		return 2
	}
	ctx := context.Background()
	var permits []*core.Permit
	for i := 0; i < h.Count; i++ {
		p, err := sem.Acquire(ctx, core.Forever)
		if err != nil {
			fmt.Println(err)
			return 2
		}
		permits = append(permits, p)
	}
	for i := 0; i < h.Queue; i++ {
		req := sem.Start(core.Forever, func(r *core.Request) {
			if p, _ := r.Result(); p != nil {
				fmt.Println("granted")
			}
		})
		select { // queued in Redis, or served at once
		case <-req.Waiting():
		case <-req.Done():
		}
	}
	fmt.Println("held")
	bufio.NewReader(os.Stdin).ReadString('\n')
	for _, p := range permits {
		err := p.Release(ctx)
		fmt.Println("lost", strconv.FormatBool(err == core.ErrLeaseLost))
	}
	return 0
}
