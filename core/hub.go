package core

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
)

// hub shares one Pub/Sub connection among all limiters of a Store. Each
// limiter subscribes to its own grant channel; several limiters of one
// Store may share a channel (the same name used twice in one process), and
// the hub hands each message to all of them.
type hub struct {
	rdb redis.UniversalClient
	log *slog.Logger

	// sendMu orders SUBSCRIBE and UNSUBSCRIBE as the maps decided them,
	// so that a quick unsubscribe and subscribe cannot cross on the wire.
	sendMu sync.Mutex

	mu        sync.Mutex
	ps        *redis.PubSub
	handlers  map[string]map[any]func(payload string, resubscribed bool)
	confirmed map[string]bool          // Redis has confirmed the channel
	pending   map[string]chan struct{} // closed when Redis confirms it
}

func newHub(rdb redis.UniversalClient, log *slog.Logger) *hub {
	return &hub{
		rdb:       rdb,
		log:       log,
		handlers:  map[string]map[any]func(string, bool){},
		confirmed: map[string]bool{},
		pending:   map[string]chan struct{}{},
	}
}

// subscribe routes the messages of channel to fn, registered for owner,
// and returns once Redis has confirmed the subscription, so that no grant
// published afterwards can be missed. fn runs on the hub's goroutine and
// must not block; it is called with resubscribed set, and no payload,
// after the connection was lost and made again, since messages published
// meanwhile are gone. On failure fn stays registered and a later call
// tries again.
func (h *hub) subscribe(ctx context.Context, owner any, channel string,
	fn func(payload string, resubscribed bool)) error {
	h.sendMu.Lock()
	h.mu.Lock()
	if h.ps == nil {
		h.ps = h.rdb.Subscribe(context.Background())
		go h.loop(h.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)))
	}
	ps := h.ps
	if h.handlers[channel] == nil {
		h.handlers[channel] = map[any]func(string, bool){}
	}
	h.handlers[channel][owner] = fn
	if h.confirmed[channel] {
		h.mu.Unlock()
		h.sendMu.Unlock()
		return nil
	}
	ok := h.pending[channel]
	if ok == nil {
		ok = make(chan struct{})
		h.pending[channel] = ok
	}
	h.mu.Unlock()

	// Sent again when an earlier attempt is still unconfirmed: Redis
	// answers each SUBSCRIBE, and a second answer only causes a recheck.
	err := ps.Subscribe(ctx, channel)
	h.sendMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: subscribe %s: %w", ErrConnection, channel, err)
	}
	select {
	case <-ok:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: subscribe %s: %w", ErrConnection, channel, ctx.Err())
	}
}

// unsubscribe stops routing channel to owner, and leaves the channel once
// no owner is left. Errors are only logged, since the connection is shared
// and closes with the Store anyway.
func (h *hub) unsubscribe(owner any, channel string) {
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	h.mu.Lock()
	delete(h.handlers[channel], owner)
	if len(h.handlers[channel]) > 0 {
		h.mu.Unlock()
		return
	}
	delete(h.handlers, channel)
	delete(h.confirmed, channel)
	delete(h.pending, channel)
	ps := h.ps
	h.mu.Unlock()
	if ps == nil {
		return
	}
	if err := ps.Unsubscribe(context.Background(), channel); err != nil {
		h.log.Debug("timely: unsubscribe failed", "channel", channel, "err", err)
	}
}

func (h *hub) close() error {
	h.mu.Lock()
	ps := h.ps
	h.ps = nil
	h.mu.Unlock()
	if ps == nil {
		return nil
	}
	return ps.Close()
}

// loop delivers messages until the PubSub closes. A recovered panic is
// logged and the loop goes on, since a crash here would take the host
// process down.
func (h *hub) loop(ch <-chan any) {
	for m := range ch {
		h.deliver(m)
	}
}

func (h *hub) deliver(m any) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("timely: panic in pubsub delivery", "panic", fmt.Sprint(p))
		}
	}()
	switch m := m.(type) {
	case *redis.Message:
		for _, fn := range h.handlersOf(m.Channel) {
			fn(m.Payload, false)
		}
	case *redis.Subscription:
		if m.Kind != "subscribe" && m.Kind != "ssubscribe" {
			return
		}
		h.mu.Lock()
		ok, first := h.pending[m.Channel]
		if first {
			delete(h.pending, m.Channel)
			close(ok)
		}
		if h.handlers[m.Channel] != nil {
			h.confirmed[m.Channel] = true
		}
		h.mu.Unlock()
		if !first {
			for _, fn := range h.handlersOf(m.Channel) {
				fn("", true)
			}
		}
	}
}

// handlersOf returns the functions that channel's messages go to.
func (h *hub) handlersOf(channel string) []func(string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fns := make([]func(string, bool), 0, len(h.handlers[channel]))
	for _, fn := range h.handlers[channel] {
		fns = append(fns, fn)
	}
	return fns
}
