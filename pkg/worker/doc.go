// Package worker is Warren's worker SDK: a Go program registers typed handlers
// by job type and runs them for jobs submitted over Warren's REST API.
//
//	w, err := worker.New(worker.Config{DatabaseURLs: …, RabbitMQURL: …, RedisURL: …})
//	worker.Handle(w, "image.resize", func(ctx context.Context, j *worker.Job[Resize]) (Thumb, error) {
//		// ctx carries the job's deadline and is cancelled on shutdown.
//		return resize(ctx, j.Args)
//	})
//	err = w.Run(ctx) // until ctx is cancelled, then drains gracefully
//
// A handler's return is its control channel: a nil error stores the result
// and marks the job succeeded; an error fails the attempt, and the job is
// retried with exponential backoff until its attempts are used up, then dead;
// NoRetry(err) fails it for good; Snooze(d) runs it again after d without
// using an attempt.
//
// Delivery is at least once and success at most once: a job whose worker
// died may run again, but it is marked succeeded only once, and a redelivered
// message of a finished job is not run.
package worker
