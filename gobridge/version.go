// Package gobridge is the thin surface that gopy binds into timely's
// Python extension module.
package gobridge

// Version reports the version of the Go core.
func Version() string { return "0.1.0" }
