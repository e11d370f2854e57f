package httpapi

import (
	"fmt"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// CompensationRequest is the body of POST /sagas/{id}/compensation/retry
// and /resolve.
type CompensationRequest struct {
	// Reason says why (retry) or how the effect was undone by hand
	// (resolve); recorded in the timeline. Required.
	Reason string `json:"reason"`
}

// retryCompensation sends a stuck compensation again
// (engine.Orchestrator.RetryCompensation).
func (s *server) retryCompensation(w http.ResponseWriter, r *http.Request) {
	const op = "retry compensation"
	id := mux.Vars(r)["id"]
	setSaga(r, id)
	var req CompensationRequest
	if !decodeOperatorRequest(w, r, op, &req, &req.Reason) {
		return
	}
	inst, err := s.orch.RetryCompensation(r.Context(), id, actor(r), req.Reason)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inst)
}

// resolveCompensation records that a stuck compensation was done by hand
// and lets the saga go on (engine.Orchestrator.ResolveCompensation).
func (s *server) resolveCompensation(w http.ResponseWriter, r *http.Request) {
	const op = "resolve compensation"
	id := mux.Vars(r)["id"]
	setSaga(r, id)
	var req CompensationRequest
	if !decodeOperatorRequest(w, r, op, &req, &req.Reason) {
		return
	}
	inst, err := s.orch.ResolveCompensation(r.Context(), id, actor(r), req.Reason)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inst)
}

// compensationMetrics are the counters of engine.CompensationObserver.
type compensationMetrics struct {
	compensations *prometheus.CounterVec
	expired       *prometheus.CounterVec
	late          *prometheus.CounterVec
}

func newCompensationMetrics(reg prometheus.Registerer) (*compensationMetrics, error) {
	c := &compensationMetrics{
		compensations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "compensations_total",
			Help: "Compensations per definition, command and outcome: sent (first send), done, failed (unanswered past its retries: the saga stopped as compensation_failed), retried and resolved (by an operator).",
		}, []string{"saga", "command", "outcome"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_expired_total",
			Help: "COMMAND_EXPIRED replies: commands a participant refused for their deadline (no effect).",
		}, []string{"saga", "command"}),
		late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "late_replies_total",
			Help: "Answers to compensable commands the saga no longer waited for (recorded in the timeline and compensated, not dead-lettered).",
		}, []string{"saga", "event"}),
	}
	for _, col := range []prometheus.Collector{c.compensations, c.expired, c.late} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register saga-machine compensation metrics: %w", err)
		}
	}
	return c, nil
}

var _ engine.CompensationObserver = (*Metrics)(nil)

// Compensation counts one step of a compensation.
func (m *Metrics) Compensation(saga, command string, outcome engine.CompensationOutcome) {
	m.comp.compensations.WithLabelValues(saga, command, string(outcome)).Inc()
}

// CommandExpired counts a COMMAND_EXPIRED reply.
func (m *Metrics) CommandExpired(saga, command string) {
	m.comp.expired.WithLabelValues(saga, command).Inc()
}

// LateReply counts a late reply to a compensable command.
func (m *Metrics) LateReply(saga, event string) { m.comp.late.WithLabelValues(saga, event).Inc() }
