// Package k8stest checks the container build (deploy/Dockerfile,
// .dockerignore) and the Kubernetes manifests (deploy/kubernetes/) against the
// code, without Docker or a cluster: the manifests parse, name only fields the
// test knows and settings the processes read, run the Procfile's commands from
// the binaries `make build` writes, and agree with each other (the workers'
// Deployment is the one the scheduler scales, the Service reaches the api's
// port, the probes the processes' own).
package k8stest
