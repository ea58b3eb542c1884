package core

// Every key of a limiter starts with "timely:" and carries the hash tag
// {kind:name}, so that all keys of one limiter share a cluster slot while
// different limiters spread over the cluster.

// keyPrefix returns the common start of a limiter's keys.
func keyPrefix(kind, name string) string {
	return "timely:{" + kind + ":" + name + "}"
}

// semaphoreKeys returns the KEYS of the semaphore scripts, in their order,
// and the start of the channels on which grants are announced: each
// process listens on grants + ":" + its token.
func semaphoreKeys(name string) (keys []string, grants string) {
	p := keyPrefix("sem", name)
	return []string{p + ":holders", p + ":queue", p + ":places", p + ":info"},
		p + ":grants"
}

// bucketKeys returns the KEYS of the token bucket scripts: the bucket and
// its holes.
func bucketKeys(name string) []string {
	p := keyPrefix("bucket", name)
	return []string{p, p + ":holes"}
}
