// Package infra holds the Kubernetes manifests of the echo environment, one
// kustomize tree: base (everything, deployable with kubectl apply -k infra)
// and dev (the Tilt build, whose live-updated containers get a writable root
// filesystem). Its tests build both trees and check them against the rules
// the manifests must keep.
package infra
