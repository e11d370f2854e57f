// Package k8s holds saga-machine's Kubernetes manifests (plain YAML, applied
// with `kubectl apply -k k8s`) and, in its tests, the checks that keep them
// honest: `kustomize build` (in process) yields exactly the manifests'
// objects, which are valid against the Kubernetes OpenAPI schemas
// (kubernetes-validate, offline) and the API server's rules on names,
// selectors, ports, volumes and quantities; every manifest parses and names
// its kind and object; every container of ours runs an image `make images`
// builds; every environment variable and flag given to one of our binaries
// is one that binary really reads; no manifest turns on the development
// header mode; every database has an owner; the saga definitions and
// migrations ConfigMaps equal sagas/*.yaml and sagas/migrations/*.yaml byte
// for byte and are mounted where saga-machine loads them, and the Kafka
// topics Job creates every topic the definitions use; Kafka's listeners
// that leave the pod are SASL_SSL with the key of a Secret, every Kafka
// client of ours verifies the broker with the CA of a mounted Secret, and
// /metrics of every service needs the scrape token that the Prometheus
// scrape job (monitoring/saga-machine.scrape.yaml) sends.
//
// The package has no Go API; README.md in this directory describes the
// deployment. After editing sagas/*.yaml or sagas/migrations/*.yaml,
// regenerate the ConfigMaps with
//
//	go test ./k8s -run TestSagasConfigMap -update
package k8s
