package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"timely/core"
)

// holder is a separate OS process holding permits (see holderProcess).
type holder struct {
	cmd   *exec.Cmd
	in    *os.File
	lines *bufio.Scanner
}

func startHolder(t *testing.T, spec holderSpec) *holder {
	t.Helper()
	raw, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd: cmd, in: stdin.(*os.File), lines: bufio.NewScanner(stdout)}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	h.expect(t, "held")
	return h
}

func (h *holder) expect(t *testing.T, want string) {
	t.Helper()
	if !h.lines.Scan() {
		t.Fatalf("holder process ended before %q", want)
	}
	if got := h.lines.Text(); got != want {
		t.Fatalf("holder process said %q, want %q", got, want)
	}
}

// interval is one recorded hold, on this process's monotonic clock.
type interval struct{ ask, grant, release time.Time }

func mostAtOnce(holds []interval) int {
	type edge struct {
		at   time.Time
		step int
	}
	var edges []edge
	for _, h := range holds {
		edges = append(edges, edge{h.grant, 1}, edge{h.release, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].step < edges[j].step
		}
		return edges[i].at.Before(edges[j].at)
	})
	inside, most := 0, 0
	for _, e := range edges {
		inside += e.step
		most = max(most, inside)
	}
	return most
}

// semaphoresOnStores returns n semaphores of the capacity called name, each
// on a Store of its own (its own connections and dispatcher, as n
// processes would have), closed when the test ends.
func semaphoresOnStores(t *testing.T, srv *redisServer, name string, capacity, n int) []*core.Semaphore {
	t.Helper()
	sems := make([]*core.Semaphore, n)
	for i := range sems {
		st, err := core.Open(srv.url(), core.StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if sems[i], err = core.NewSemaphore(st, name, capacity, core.SemaphoreOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sems[i].Close() })
	}
	return sems
}

// TestSemaphoreSafetyAcrossStores runs 4 stores (each its own connections
// and dispatcher, as 4 processes would have) x 100 waiters, 20% canceled
// at random moments.
func TestSemaphoreSafetyAcrossStores(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	var mu sync.Mutex
	var holds []interval
	var wg sync.WaitGroup
	for p, sem := range semaphoresOnStores(t, srv, name, 3, 4) {
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func(rng *rand.Rand) {
				defer wg.Done()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if rng.Float64() < 0.2 {
					time.AfterFunc(time.Duration(rng.Intn(300))*time.Millisecond, cancel)
				}
				time.Sleep(time.Duration(rng.Intn(200)) * time.Millisecond)
				ask := time.Now()
				perm, err := sem.Acquire(ctx, core.Forever)
				if errors.Is(err, context.Canceled) {
					return
				} else if err != nil {
					t.Error(err)
					return
				}
				h := interval{ask: ask, grant: time.Now()}
				time.Sleep(time.Duration(1+rng.Intn(5)) * time.Millisecond)
				h.release = time.Now()
				perm.Release(context.Background())
				mu.Lock()
				holds = append(holds, h)
				mu.Unlock()
			}(rand.New(rand.NewSource(int64(p*1000 + i))))
		}
	}
	wg.Wait()
	if n := mostAtOnce(holds); n != 3 {
		t.Errorf("at most %d holders at once, want 3", n)
	}
	st, _ := core.Open(srv.url(), core.StoreOptions{})
	defer st.Close()
	probe, _ := core.NewSemaphore(st, name, 3, core.SemaphoreOptions{})
	waitState(t, probe, core.SemaphoreState{Capacity: 3})
}

// TestSemaphoreFIFOAcrossStores checks that waiters of 4 stores are
// granted in the order they asked, but for the jitter of reaching Redis.
func TestSemaphoreFIFOAcrossStores(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	var mu sync.Mutex
	var holds []interval
	var wg sync.WaitGroup
	for p, sem := range semaphoresOnStores(t, srv, name, 3, 4) {
		for i := 0; i < 40; i++ {
			wg.Add(1)
			go func(rng *rand.Rand) {
				defer wg.Done()
				time.Sleep(time.Duration(rng.Intn(2000)) * time.Millisecond)
				h := interval{ask: time.Now()}
				perm, err := sem.Acquire(context.Background(), core.Forever)
				if err != nil {
					t.Error(err)
					return
				}
				h.grant = time.Now()
				time.Sleep(time.Duration(30+rng.Intn(20)) * time.Millisecond)
				perm.Release(context.Background())
				mu.Lock()
				holds = append(holds, h)
				mu.Unlock()
			}(rand.New(rand.NewSource(int64(p*1000 + i))))
		}
	}
	wg.Wait()
	// The jitter covers the way from Start to Redis: a dispatcher busy with
	// another call, and goroutines scheduled late on a loaded machine.
	const jitter = 25 * time.Millisecond
	queued, inversions := 0, 0
	for _, a := range holds {
		if a.grant.Sub(a.ask) > 2*jitter {
			queued++
		}
		for _, b := range holds {
			if b.ask.Sub(a.ask) > jitter && a.grant.Sub(b.grant) > jitter {
				inversions++
			}
		}
	}
	if queued < 30 {
		t.Fatalf("only %d waiters queued; the test needs a queue", queued)
	}
	if inversions > 0 {
		t.Errorf("%d waiters overtaken by later ones", inversions)
	}
}

func TestSemaphoreKilledHolderPermitsReturn(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	const expiry = 2 * time.Second
	h := startHolder(t, holderSpec{URL: srv.url(), Name: name, Capacity: 3, Count: 3, Expiry: expiry})
	h.cmd.Process.Kill()
	h.cmd.Wait()
	killed := time.Now()
	st, _ := core.Open(srv.url(), core.StoreOptions{})
	defer st.Close()
	sem, _ := core.NewSemaphore(st, name, 3, core.SemaphoreOptions{Expiry: expiry})
	defer sem.Close()
	p, err := sem.Acquire(context.Background(), core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	p.Release(context.Background())
	if d := time.Since(killed); d > expiry+time.Second || d < 500*time.Millisecond {
		t.Errorf("permits of the killed holder came back after %v, want within %v", d, expiry+time.Second)
	}
}

func TestSemaphoreFrozenHolderAddsNoCapacity(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	const expiry = time.Second
	h := startHolder(t, holderSpec{URL: srv.url(), Name: name, Capacity: 3, Count: 3, Expiry: expiry})
	h.cmd.Process.Signal(syscall.SIGSTOP)
	frozen := time.Now()
	st, _ := core.Open(srv.url(), core.StoreOptions{})
	defer st.Close()
	sem, _ := core.NewSemaphore(st, name, 3, core.SemaphoreOptions{Expiry: expiry})
	defer sem.Close()
	ctx := context.Background()
	var mine []*core.Permit
	for i := 0; i < 3; i++ {
		p, err := sem.Acquire(ctx, core.Forever)
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, p)
	}
	if d := time.Since(frozen); d > expiry+time.Second {
		t.Errorf("the frozen holder's permits came back after %v", d)
	}
	h.cmd.Process.Signal(syscall.SIGCONT)
	h.in.WriteString("go\n")
	for i := 0; i < 3; i++ {
		h.expect(t, "lost true")
	}
	if _, err := sem.Acquire(ctx, 0); !errors.Is(err, core.ErrMaxSleep) {
		t.Errorf("the thawed holder's releases added capacity: %v", err)
	}
	for _, p := range mine {
		if err := p.Release(ctx); err != nil {
			t.Error(err)
		}
	}
	waitState(t, sem, core.SemaphoreState{Capacity: 3})
}

func TestSemaphoreTenThousandWaitersFewConnections(t *testing.T) {
	srv := startRedis(t)
	st, _ := core.Open(srv.url(), core.StoreOptions{})
	defer st.Close()
	sem, _ := core.NewSemaphore(st, uniqueName(t), 1, core.SemaphoreOptions{})
	defer sem.Close()
	ctx := context.Background()
	first, err := sem.Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]*core.Request, 10000)
	for i := range reqs {
		reqs[i] = sem.Start(core.Forever, nil)
	}
	waitQueued(t, sem, 10000)
	admin := redis.NewClient(&redis.Options{Addr: srv.addr()})
	defer admin.Close()
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.TrimSpace(list), "\n"); n > 8 || n < 1 {
		t.Errorf("%d connections for 10,000 waiters, want at most 8", n)
	}
	for _, r := range reqs {
		r.Cancel()
	}
	first.Release(ctx)
	waitState(t, sem, core.SemaphoreState{Capacity: 1})
}

// TestSemaphoreRecoversAMissedGrant drops the Pub/Sub connection while a
// waiter is queued, so that its grant announcement is lost: the waiter
// still gets the permit, found when the connection is made again.
func TestSemaphoreRecoversAMissedGrant(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	ctx := context.Background()
	other, _ := core.Open(srv.url(), core.StoreOptions{})
	defer other.Close()
	holderSem, _ := core.NewSemaphore(other, name, 1, core.SemaphoreOptions{})
	defer holderSem.Close()
	p, err := holderSem.Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}

	st, _ := core.Open(srv.url(), core.StoreOptions{})
	defer st.Close()
	sem, _ := core.NewSemaphore(st, name, 1, core.SemaphoreOptions{})
	defer sem.Close()
	req := sem.Start(core.Forever, nil)
	waitQueued(t, sem, 1)

	admin := redis.NewClient(&redis.Options{Addr: srv.addr()})
	defer admin.Close()
	if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	p.Release(ctx) // its announcement goes to no subscriber
	select {
	case <-req.Done():
		if _, err := req.Result(); err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		// Sooner than the renewal (expiry/3 = 3.3 s), which would find it
		// too: the resubscription itself triggers the check.
		t.Fatal("the missed grant was not recovered at reconnection")
	}
}

// A grant is announced to the process whose waiter it is, and to no
// other: with many processes sharing a semaphore, a release must not wake
// them all.
func TestSemaphoreGrantReachesOnlyItsProcess(t *testing.T) {
	srv := startRedis(t)
	name := uniqueName(t)
	sems := semaphoresOnStores(t, srv, name, 1, 4)
	ctx := context.Background()

	spy := redis.NewClient(&redis.Options{Addr: srv.addr()})
	t.Cleanup(func() { spy.Close() })
	ps := spy.PSubscribe(ctx, "timely:{sem:"+name+"}:grants*")
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(ctx); err != nil { // the confirmation
		t.Fatal(err)
	}

	held, err := sems[0].Acquire(ctx, core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	// Processes 1..3 queue in turn; each release hands the permit on.
	reqs := make([]*core.Request, 0, 3)
	for _, s := range sems[1:] {
		reqs = append(reqs, s.Start(core.Forever, nil))
		waitState(t, sems[0], core.SemaphoreState{Capacity: 1, Holders: 1, Waiters: len(reqs)})
	}
	for i, req := range reqs {
		if err := held.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if held, err = req.Wait(ctx); err != nil {
			t.Fatalf("waiter of process %d: %v", i+1, err)
		}
		msg, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		token, _, _ := strings.Cut(held.ID(), ":")
		want := "timely:{sem:" + name + "}:grants:" + token
		if msg.Channel != want || msg.Payload != held.ID() {
			t.Fatalf("grant of %s announced as %q on %s, want it alone on %s",
				held.ID(), msg.Payload, msg.Channel, want)
		}
	}
	// A process whose release frees the permit for one of its own
	// waiters learns of the grant from its call's reply: nothing is
	// published.
	owner := sems[len(sems)-1]
	mine := owner.Start(core.Forever, nil)
	waitState(t, sems[0], core.SemaphoreState{Capacity: 1, Holders: 1, Waiters: 1})
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if held, err = mine.Wait(ctx); err != nil {
		t.Fatalf("the releasing process's own waiter: %v", err)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing else was published: no process heard another's grant.
	msg, err := ps.ReceiveTimeout(ctx, 200*time.Millisecond)
	if err == nil {
		t.Fatalf("unexpected announcement %v", msg)
	}
}

// The queued waiters of a killed process leave the queue within expiry:
// dead waiters must not stand at its head for ever.
// queuedBehind holds the one permit of a new capacity-1 semaphore and
// starts a holder process that queues n waiters behind it.
func queuedBehind(t *testing.T, n int, expiry time.Duration) (*core.Semaphore, *core.Permit, *holder) {
	t.Helper()
	srv := startRedis(t)
	name := uniqueName(t)
	st, _ := core.Open(srv.url(), core.StoreOptions{})
	t.Cleanup(func() { st.Close() })
	sem, _ := core.NewSemaphore(st, name, 1, core.SemaphoreOptions{Expiry: expiry})
	t.Cleanup(func() { sem.Close() })
	p, err := sem.Acquire(context.Background(), core.Forever)
	if err != nil {
		t.Fatal(err)
	}
	h := startHolder(t, holderSpec{URL: srv.url(), Name: name, Capacity: 1, Queue: n, Expiry: expiry})
	return sem, p, h
}

func TestSemaphoreKilledWaitersLeaveTheQueue(t *testing.T) {
	const expiry = 2 * time.Second
	sem, p, h := queuedBehind(t, 3, expiry)
	ctx := context.Background()
	waitState(t, sem, core.SemaphoreState{Capacity: 1, Holders: 1, Waiters: 3})
	h.cmd.Process.Kill()
	h.cmd.Wait()
	killed := time.Now()
	for {
		got, err := sem.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.Waiters == 0 {
			break
		}
		if d := time.Since(killed); d > expiry+time.Second {
			t.Fatalf("the killed process's waiters still queued %v after, want gone within %v",
				d, expiry+time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A waiter that comes now is served as soon as the permit is free.
	req := sem.Start(core.Forever, nil)
	if err := p.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	next, err := req.Wait(wctx)
	if err != nil {
		t.Fatalf("the live waiter behind the dead ones: %v", err)
	}
	next.Release(ctx)
}

// A process frozen for longer than expiry loses its queue places; once
// thawed it queues again, behind those who came meanwhile.
func TestSemaphoreThawedWaiterQueuesAgainAtTheBack(t *testing.T) {
	sem, p, h := queuedBehind(t, 1, time.Second)
	ctx := context.Background()
	h.cmd.Process.Signal(syscall.SIGSTOP)
	waitState(t, sem, core.SemaphoreState{Capacity: 1, Holders: 1})
	req := sem.Start(core.Forever, nil) // comes after the frozen waiter
	waitState(t, sem, core.SemaphoreState{Capacity: 1, Holders: 1, Waiters: 1})
	h.cmd.Process.Signal(syscall.SIGCONT)
	// Thawed, it finds its place gone and queues again: behind ours.
	waitState(t, sem, core.SemaphoreState{Capacity: 1, Holders: 1, Waiters: 2})
	if err := p.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	next, err := req.Wait(wctx)
	if err != nil {
		t.Fatalf("our waiter, queued before the thawed one came back: %v", err)
	}
	if err := next.Release(ctx); err != nil {
		t.Fatal(err)
	}
	h.expect(t, "granted")
}
