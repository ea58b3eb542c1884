package core

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
)

// hub shares one Pub/Sub connection among all limiters of a Store. Each
// limiter subscribes to its own grant channel; the hub routes messages to
// it by channel name.
type hub struct {
	rdb redis.UniversalClient
	log *slog.Logger

	mu        sync.Mutex
	ps        *redis.PubSub
	handlers  map[string]func(payload string, resubscribed bool)
	confirmed map[string]chan struct{}
}

func newHub(rdb redis.UniversalClient, log *slog.Logger) *hub {
	return &hub{
		rdb:       rdb,
		log:       log,
		handlers:  map[string]func(string, bool){},
		confirmed: map[string]chan struct{}{},
	}
}

// subscribe routes the messages of channel to fn and returns once Redis
// has confirmed the subscription, so that no grant published afterwards
// can be missed. fn runs on the hub's goroutine and must not block; it is
// called with resubscribed set, and no payload, after the connection was
// lost and made again, since messages published meanwhile are gone.
func (h *hub) subscribe(ctx context.Context, channel string,
	fn func(payload string, resubscribed bool)) error {
	h.mu.Lock()
	if h.ps == nil {
		h.ps = h.rdb.Subscribe(context.Background())
		go h.loop(h.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)))
	}
	ps := h.ps
	h.handlers[channel] = fn
	ok := make(chan struct{})
	h.confirmed[channel] = ok
	h.mu.Unlock()

	if err := ps.Subscribe(ctx, channel); err != nil {
		return fmt.Errorf("%w: subscribe %s: %w", ErrConnection, channel, err)
	}
	select {
	case <-ok:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: subscribe %s: %w", ErrConnection, channel, ctx.Err())
	}
}

// unsubscribe stops routing channel; errors are only logged, since the
// connection is shared and closes with the Store anyway.
func (h *hub) unsubscribe(channel string) {
	h.mu.Lock()
	delete(h.handlers, channel)
	delete(h.confirmed, channel)
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
		h.mu.Lock()
		fn := h.handlers[m.Channel]
		h.mu.Unlock()
		if fn != nil {
			fn(m.Payload, false)
		}
	case *redis.Subscription:
		if m.Kind != "subscribe" && m.Kind != "ssubscribe" {
			return
		}
		h.mu.Lock()
		fn := h.handlers[m.Channel]
		ok, first := h.confirmed[m.Channel]
		if first {
			delete(h.confirmed, m.Channel)
		}
		h.mu.Unlock()
		if first {
			close(ok)
		} else if fn != nil {
			fn("", true)
		}
	}
}
