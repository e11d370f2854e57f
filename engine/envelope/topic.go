package envelope

import "strings"

// DefaultEventTopicBase is the base name of the participants' event topics.
const DefaultEventTopicBase = "SAGA_SERVER_TOPIC"

// EventTopic returns the topic participant publishes its events to:
// base + "_" + the participant name in upper case, e.g.
// EventTopic("SAGA_SERVER_TOPIC", "deals") = "SAGA_SERVER_TOPIC_DEALS".
// Each participant writes only its own event topic (broker ACLs), and
// saga-machine applies an event from a participant's topic only if the
// envelope names that participant, so a participant cannot speak for
// another. The engine and the participant SDK both use this function.
func EventTopic(base, participant string) string {
	return base + "_" + strings.ToUpper(participant)
}

// CommandTopic returns the default topic of participant's commands: its
// name in upper case + "_TOPIC", e.g. PROFILE_TOPIC (the saga definitions
// name each participant's topic; this is the SDK's default).
func CommandTopic(participant string) string {
	return strings.ToUpper(participant) + "_TOPIC"
}
