package server

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3 document of the API. A test checks that its paths
// and methods are exactly the route table's.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(openAPI)
}
