package delivery

// SetPurgeChunk sets the rows per purge statement for a test and returns
// the previous value.
func SetPurgeChunk(n int) int {
	old := purgeChunk
	purgeChunk = n
	return old
}
