package gobridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"timely/core"
)

// inspectTimeout bounds a whole Inspect call, SCAN included.
const inspectTimeout = 30 * time.Second

// limiterJSON is one limiter as Inspect reports it; times carry their unit
// in the field name.
type limiterJSON struct {
	Kind           string `json:"kind"`
	Name           string `json:"name"`
	Capacity       int    `json:"capacity"`
	Holders        int    `json:"holders"`
	Waiters        int    `json:"waiters"`
	ExpiryMs       int64  `json:"expiry_ms"`
	Tokens         int    `json:"tokens"`
	Promised       int    `json:"promised"`
	RefillAmount   int    `json:"refill_amount"`
	RefillPeriodUs int64  `json:"refill_period_us"`
}

// Inspect returns, as a JSON array, the limiters stored in the Redis at
// url (see core.Inspect): every one when names is empty, else those named
// by one of its lines.
func Inspect(url, names string) (s string, err error) {
	defer guard(&err)()
	mu.Lock()
	st, err := store(url)
	mu.Unlock()
	if err != nil {
		return "", wrap(err)
	}
	var list []string
	if names != "" {
		list = strings.Split(names, "\n")
	}
	ctx, cancel := context.WithTimeout(context.Background(), inspectTimeout)
	defer cancel()
	found, err := core.Inspect(ctx, st, list...)
	if errors.Is(err, context.DeadlineExceeded) {
		return "", fmt.Errorf("[connection] timely: inspecting took longer than %v", inspectTimeout)
	}
	if err != nil {
		return "", wrap(err)
	}
	out := make([]limiterJSON, len(found))
	for i, l := range found {
		out[i] = limiterJSON{
			Kind: l.Kind, Name: l.Name, Capacity: l.Capacity,
			Holders: l.Holders, Waiters: l.Waiters, ExpiryMs: l.Expiry.Milliseconds(),
			Tokens: l.Tokens, Promised: l.Promised, RefillAmount: l.RefillAmount,
			RefillPeriodUs: l.RefillPeriod.Microseconds(),
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", wrap(err)
	}
	return string(b), nil
}
