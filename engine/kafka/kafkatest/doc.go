// Package kafkatest is the conformance suite every broker behind package kafka
// must pass: real Apache Kafka and the embedded kfake broker run the same
// subtests, so the one-command run and production behave alike.
//
// Use it from a test:
//
//	func TestConformance(t *testing.T) {
//		kafkatest.Run(t, func(t *testing.T) kafka.Config { return testenv.Kafka(t) })
//	}
//
// Every subtest creates its own uniquely named topics and groups, so a shared
// broker can run the suite repeatedly and in parallel.
package kafkatest
