package ingress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"gopkg.in/yaml.v3"
)

// AnnotationPrefix is the prefix of ingress-nginx's annotations.
const AnnotationPrefix = "nginx.ingress.kubernetes.io/"

// The annotations Render understands (without AnnotationPrefix).
const (
	AnnotationAuthURL             = "auth-url"
	AnnotationAuthSignin          = "auth-signin"
	AnnotationAuthResponseHeaders = "auth-response-headers"
	AnnotationUseRegex            = "use-regex"
	AnnotationRewriteTarget       = "rewrite-target"
	AnnotationProxyBufferSize     = "proxy-buffer-size"
)

// Path types of an Ingress path.
const (
	PathPrefix                 = "Prefix"
	PathExact                  = "Exact"
	PathImplementationSpecific = "ImplementationSpecific"
)

// Ingress is one networking.k8s.io/v1 Ingress object, reduced to what the
// routes need.
type Ingress struct {
	// Name and Namespace identify the object.
	Name, Namespace string
	// ClassName is spec.ingressClassName.
	ClassName string
	// Annotations are metadata.annotations.
	Annotations map[string]string
	// Rules are spec.rules.
	Rules []Rule
}

// Rule is one host of an Ingress and its paths.
type Rule struct {
	// Host is the host name the rule serves.
	Host string
	// Paths are the rule's http.paths, in manifest order.
	Paths []Path
}

// Path is one path of a rule and its backend Service.
type Path struct {
	// Path is the path or, with use-regex, the regular expression.
	Path string
	// Type is Prefix, Exact or ImplementationSpecific.
	Type string
	// Service is the backend Service's name (in the Ingress's namespace).
	Service string
	// Port is the Service port's name, or its number as a string.
	Port string
}

// Annotation returns an ingress-nginx annotation's value by its short
// name (e.g. "auth-url").
func (in Ingress) Annotation(name string) string {
	return in.Annotations[AnnotationPrefix+name]
}

// UseRegex reports whether the Ingress's paths are regular expressions.
func (in Ingress) UseRegex() bool {
	return in.Annotation(AnnotationUseRegex) == "true"
}

// ParseFile reads the Ingress objects of a YAML file.
func ParseFile(path string) ([]Ingress, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ingress: read %s: %w", path, err)
	}
	ings, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("ingress: %s: %w", path, err)
	}
	return ings, nil
}

// manifest is the part of a Kubernetes object Parse reads.
type manifest struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		IngressClassName string `yaml:"ingressClassName"`
		Rules            []struct {
			Host string `yaml:"host"`
			HTTP struct {
				Paths []struct {
					Path     string `yaml:"path"`
					PathType string `yaml:"pathType"`
					Backend  struct {
						Service *struct {
							Name string `yaml:"name"`
							Port struct {
								Name   string `yaml:"name"`
								Number int    `yaml:"number"`
							} `yaml:"port"`
						} `yaml:"service"`
					} `yaml:"backend"`
				} `yaml:"paths"`
			} `yaml:"http"`
		} `yaml:"rules"`
	} `yaml:"spec"`
}

// Parse reads the Ingress objects (apiVersion networking.k8s.io/v1) of a
// multi-document YAML stream; documents of other kinds are skipped. A
// path without a Service backend, a Service port, a known path type or a
// leading slash is an error.
func Parse(data []byte) ([]Ingress, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Ingress
	for doc := 1; ; doc++ {
		var m manifest
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if m.Kind != "Ingress" {
			continue
		}
		if m.APIVersion != "networking.k8s.io/v1" {
			return nil, fmt.Errorf("document %d: Ingress %s has apiVersion %q, want networking.k8s.io/v1", doc, m.Metadata.Name, m.APIVersion)
		}
		in := Ingress{Name: m.Metadata.Name, Namespace: m.Metadata.Namespace, ClassName: m.Spec.IngressClassName,
			Annotations: m.Metadata.Annotations}
		if in.Namespace == "" {
			in.Namespace = "default"
		}
		for _, r := range m.Spec.Rules {
			rule := Rule{Host: r.Host}
			for _, p := range r.HTTP.Paths {
				where := fmt.Sprintf("Ingress %s/%s, path %q", in.Namespace, in.Name, p.Path)
				if p.Backend.Service == nil || p.Backend.Service.Name == "" {
					return nil, fmt.Errorf("%s: no Service backend", where)
				}
				port := p.Backend.Service.Port.Name
				if port == "" && p.Backend.Service.Port.Number > 0 {
					port = strconv.Itoa(p.Backend.Service.Port.Number)
				}
				if port == "" {
					return nil, fmt.Errorf("%s: the backend names no port", where)
				}
				switch p.PathType {
				case PathPrefix, PathExact, PathImplementationSpecific:
				default:
					return nil, fmt.Errorf("%s: pathType %q, want Prefix, Exact or ImplementationSpecific", where, p.PathType)
				}
				if len(p.Path) == 0 || p.Path[0] != '/' {
					return nil, fmt.Errorf("%s: a path must start with /", where)
				}
				rule.Paths = append(rule.Paths, Path{Path: p.Path, Type: p.PathType, Service: p.Backend.Service.Name, Port: port})
			}
			in.Rules = append(in.Rules, rule)
		}
		out = append(out, in)
	}
	return out, nil
}

// Route is one path of one Ingress with its backend, as Routes lists them.
type Route struct {
	// Ingress is "namespace/name" of the object that declares the path.
	Ingress string
	// Host is the rule's host.
	Host string
	// Path and Type are the path as declared.
	Path, Type string
	// Regex reports whether Path is a regular expression (use-regex).
	Regex bool
	// Backend is the Service as "namespace/name".
	Backend string
	// Port is the Service port's name or number.
	Port string
	// Authenticated reports whether the route asks auth-url first.
	Authenticated bool
	// RewriteTarget is the rewrite-target annotation, if any.
	RewriteTarget string
}

// Routes lists every path of ings in manifest order.
func Routes(ings []Ingress) []Route {
	var out []Route
	for _, in := range ings {
		for _, r := range in.Rules {
			for _, p := range r.Paths {
				out = append(out, Route{Ingress: in.Namespace + "/" + in.Name, Host: r.Host, Path: p.Path, Type: p.Type,
					Regex: in.UseRegex(), Backend: in.Namespace + "/" + p.Service, Port: p.Port,
					Authenticated: in.Annotation(AnnotationAuthURL) != "", RewriteTarget: in.Annotation(AnnotationRewriteTarget)})
			}
		}
	}
	return out
}
