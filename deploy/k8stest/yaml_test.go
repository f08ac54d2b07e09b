package k8stest

import (
	"errors"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// parseYAML returns the documents of src (separated by "---") as
// map[string]any, []any and scalar values.
func parseYAML(src string) ([]any, error) {
	dec := yaml.NewDecoder(strings.NewReader(src))
	var docs []any
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}
