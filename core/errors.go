package core

import "errors"

// ErrMaxSleep is returned when an acquisition would have to wait longer
// than its maxSleep allows. The limiter is left unchanged: no permit is
// held and no token is consumed.
var ErrMaxSleep = errors.New("timely: wait would exceed max sleep")

// ErrLeaseLost is returned by Permit.Release when the permit's lease had
// already expired in Redis (the process stopped renewing it for longer than
// the expiry, or the state was lost). The release then adds no capacity,
// since the permit may already have been handed to someone else.
var ErrLeaseLost = errors.New("timely: lease lost before release")

// ErrCanceled is the result of a Request that was canceled before it
// completed. Nothing is held on its behalf afterwards.
var ErrCanceled = errors.New("timely: request canceled")

// ErrClosed is returned by a limiter that was closed.
var ErrClosed = errors.New("timely: limiter closed")

// ErrConnection wraps every failure to reach Redis or to run a script on
// it. Test for it with errors.Is; the wrapped error says what failed.
var ErrConnection = errors.New("timely: redis unavailable")

// ErrInternal wraps a panic recovered inside the core; the request that
// met it fails instead of the process.
var ErrInternal = errors.New("timely: internal error")
