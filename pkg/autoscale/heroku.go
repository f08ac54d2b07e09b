package autoscale

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HerokuConfig configures the heroku backend.
type HerokuConfig struct {
	// App is the app's name or id.
	App string
	// APIKey is a Heroku API key (HEROKU_API_KEY) allowed to scale the app.
	APIKey string
	// ProcessType is the formation to scale; default "worker".
	ProcessType string
	// BaseURL is the Platform API; default https://api.heroku.com.
	BaseURL string
	// Timeout bounds one request; default 10s.
	Timeout time.Duration
	// Retry says how failed requests are retried.
	Retry Retry
}

// Heroku scales a process type through the Platform API:
// GET and PATCH /apps/{app}/formation/{type} with {"quantity": n}. Heroku
// stops surplus dynos with SIGTERM and 30 s to finish.
type Heroku struct {
	remote
	path string
}

// NewHeroku returns the heroku backend.
func NewHeroku(cfg HerokuConfig) (*Heroku, error) {
	if cfg.ProcessType == "" {
		cfg.ProcessType = "worker"
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = "https://api.heroku.com"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	switch {
	case cfg.App == "":
		return nil, errors.New("heroku: no app name")
	case cfg.APIKey == "":
		return nil, errors.New("heroku: no API key")
	}
	h := &Heroku{
		path: fmt.Sprintf("/apps/%s/formation/%s", url.PathEscape(cfg.App), url.PathEscape(cfg.ProcessType)),
		remote: remote{
			backend: "heroku",
			base:    strings.TrimRight(cfg.BaseURL, "/"),
			client:  &http.Client{Timeout: cfg.Timeout},
			retry:   cfg.Retry.withDefaults(),
			header: func(h http.Header) error {
				h.Set("Accept", "application/vnd.heroku+json; version=3")
				h.Set("Authorization", "Bearer "+cfg.APIKey)
				return nil
			},
		},
	}
	h.hint = func(status int) string {
		switch status {
		case http.StatusUnauthorized:
			return "check HEROKU_API_KEY"
		case http.StatusForbidden:
			return fmt.Sprintf("the HEROKU_API_KEY's account may not scale app %s", cfg.App)
		case http.StatusNotFound:
			return fmt.Sprintf("no app %s with a %s process type: check WARREN_AUTOSCALE_HEROKU_APP and the Procfile", cfg.App, cfg.ProcessType)
		case http.StatusTooManyRequests:
			return "the account's API rate limit"
		}
		return ""
	}
	return h, nil
}

type formation struct {
	Quantity int `json:"quantity"`
}

// Workers implements Scaler: the formation's quantity.
func (h *Heroku) Workers(ctx context.Context) (int, error) {
	var f formation
	if err := h.do(ctx, http.MethodGet, h.path, "", nil, &f); err != nil {
		return 0, err
	}
	return f.Quantity, nil
}

// Scale implements Scaler.
func (h *Heroku) Scale(ctx context.Context, n int) error {
	return h.do(ctx, http.MethodPatch, h.path, "application/json", formation{Quantity: n}, nil)
}
