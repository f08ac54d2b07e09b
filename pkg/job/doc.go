// Package job holds Warren's job model: the job record, its states, and the
// job id, which carries the shard that stores the job and sorts by creation time.
package job
