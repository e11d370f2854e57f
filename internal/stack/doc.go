// Package stack is the Go side of the local full stack that `make stack`
// (scripts/stack.sh) runs on loopback: Keycloak under /auth, oauth2-proxy,
// nginx generated from k8s/ingress.yaml (internal/ingress), and
// saga-machine, deals, profile and notification as separate processes on
// make up's PostgreSQL and authenticated Kafka.
//
// It holds what the script and the end-to-end test share:
//
//   - Manifest extraction: RealmJSON reads THE realm file (the ConfigMap
//     of k8s/auth/keycloak-realm.yaml) that Keycloak imports, and
//     OAuth2Proxy reads the alpha config and container arguments of
//     k8s/auth/oauth2-proxy.yaml, so that the local stack runs the
//     settings the manifests deploy.
//   - Keycloak: Admin (the admin REST API: register a user, set her
//     password and realm roles, as Postman would) and PasswordToken (a
//     token from the realm's token endpoint with the direct access grant of
//     the public client "postman").
//   - LoadEnv reads the addresses the running stack wrote into
//     $SAGA_RUN_DIR/stack/stack.env.
//
// scripts/stackctl is its command-line front end for scripts/stack.sh. The
// end-to-end browser test of the stack is this package's test
// (TestFrontDoor): it needs the running stack and chromium, and fails
// under CI=true when either is missing.
package stack
