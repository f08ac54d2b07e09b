// Package broker carries Warren's "run this job now" messages over RabbitMQ.
//
// Postgres is the source of truth for jobs; the broker only moves job ids to
// workers. A Broker owns one AMQP connection and keeps it alive: when the
// connection drops it redials in the background with capped exponential
// backoff, re-declares the topology it has seen, and consumers started with
// [Broker.Consume] re-subscribe by themselves.
//
// # Topology
//
// For every Warren queue name Q, with Config.Prefix P (default "warren"), the
// broker declares, all durable and idempotently:
//
//   - a direct exchange named P;
//   - a classic priority queue "P.q.Q" (x-max-priority = Config.MaxPriority),
//     bound to P with routing key Q — the queue workers consume;
//   - a park queue "P.park.Q" with x-message-ttl = Config.ParkDelay that
//     dead-letters to exchange P with routing key Q;
//   - a dead queue "P.dead.Q" that nothing consumes.
//
// A worker that receives a job type it has no handler for calls
// [Delivery.Park]: the message waits in the park queue for ParkDelay and then
// returns to Q, so it is neither dropped nor redelivered in a hot loop. A
// message that cannot be a job at all (a poison message) goes to the dead
// queue with [Delivery.DeadLetter], with the reason in its headers, for a
// person to look at.
//
// # Guarantees
//
// [Broker.Publish] sends persistent messages and returns only once RabbitMQ
// has confirmed every one of them (publisher confirms); any nack or connection
// loss before the confirm is an error, and the caller retries. Consumers use
// manual acknowledgements: a message that is not acked before its channel or
// connection goes away is redelivered by RabbitMQ, so delivery is
// at-least-once and handlers must be idempotent.
package broker
