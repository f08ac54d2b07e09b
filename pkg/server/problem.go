package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Problem is an RFC 9457 problem document, the body of every error response.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail"`
	Errors []FieldError `json:"errors,omitempty"`
}

// FieldError names one invalid field of a request.
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func writeProblem(w http.ResponseWriter, status int, detail string, fields ...FieldError) {
	p := Problem{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Errors: fields,
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="warren"`)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeError is a request body that cannot be used, with its HTTP status.
type decodeError struct {
	status int
	detail string
}

func (e *decodeError) Error() string { return e.detail }

// decode reads exactly one JSON object into v, refusing invalid UTF-8 (which
// the JSON decoder would silently replace), unknown fields and trailing data,
// and explains any failure in terms of the request.
func decode(body io.Reader, v any) error {
	raw, err := io.ReadAll(body)
	if err != nil {
		return explain(err)
	}
	if !utf8.Valid(raw) {
		return &decodeError{http.StatusBadRequest, "the body is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return explain(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return explain(err)
		}
		return &decodeError{http.StatusBadRequest, "malformed JSON: data after the JSON object"}
	}
	return nil
}

// decodeFailed answers a request whose body decode refused.
func decodeFailed(w http.ResponseWriter, err error) {
	var de *decodeError
	if !errors.As(err, &de) {
		de = &decodeError{http.StatusBadRequest, err.Error()}
	}
	writeProblem(w, de.status, de.detail)
}

func explain(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	var tm *time.ParseError
	switch {
	case errors.As(err, &tm) || strings.HasPrefix(err.Error(), "Time.UnmarshalJSON"):
		// run_at is the only time in a request
		return &decodeError{http.StatusUnprocessableEntity, `field "run_at" must be an RFC 3339 time such as "2030-01-02T15:04:05Z"`}
	case errors.As(err, &tooBig):
		return &decodeError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", tooBig.Limit)}
	case errors.Is(err, io.EOF):
		return &decodeError{http.StatusBadRequest, "empty body: expected a JSON object"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &decodeError{http.StatusBadRequest, "malformed JSON: the body ends early"}
	case errors.As(err, &syn):
		return &decodeError{http.StatusBadRequest, fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn)}
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return &decodeError{http.StatusBadRequest, fmt.Sprintf("expected a JSON object, got %s", typ.Value)}
		}
		return &decodeError{http.StatusUnprocessableEntity, fmt.Sprintf("field %q must be %s, got %s", field, kind(typ.Type.Kind().String()), typ.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return &decodeError{http.StatusUnprocessableEntity, "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")}
	default:
		return &decodeError{http.StatusBadRequest, "malformed JSON: " + err.Error()}
	}
}

func kind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "int", "int64", "int32", "uint8", "uint16", "uint32", "uint64", "uint", "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return k
}
