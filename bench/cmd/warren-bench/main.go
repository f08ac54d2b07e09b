// Command warren-bench runs Warren's benchmark (package bench) against a
// running stack: `make bench`. Settings come from the environment, then from
// the env file (.env, as `make run` writes it): WARREN_URL (default
// http://localhost:8080), WARREN_TOKEN, RABBITMQ_URL, DATABASE_URLS,
// WARREN_CONCURRENCY.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/warrenhq/warren/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "warren-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("warren-bench", flag.ContinueOnError)
	envFile := fs.String("env", ".env", "env file to read settings from when the environment lacks them")
	out := fs.String("out", "bench/results.json", "where to write the figures as JSON")
	var cfg bench.Config
	fs.IntVar(&cfg.N, "n", 20000, "messages/jobs for the ceiling, batch and single phases")
	fs.IntVar(&cfg.Clients, "clients", 32, "concurrent batch submitters (the single path uses 4×)")
	fs.IntVar(&cfg.BatchSize, "batch", 500, "jobs per batch request")
	fs.IntVar(&cfg.Rate, "rate", 200, "offered jobs/s in the latency phase")
	fs.DurationVar(&cfg.Duration, "duration", 0, "length of the latency phase (default 10s)")
	phases := fs.String("phases", "", "comma-separated phases to run: ceiling, postgres, batch, single, latency, floor (default all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.Phases, err = bench.ParsePhases(*phases); err != nil {
		return err
	}
	file, err := bench.EnvFile(*envFile)
	if err != nil {
		return err
	}
	get := func(k string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return file[k]
	}
	cfg.URL, cfg.Token, cfg.RabbitMQURL = get("WARREN_URL"), get("WARREN_TOKEN"), get("RABBITMQ_URL")
	if cfg.URL == "" {
		cfg.URL = "http://localhost:" + orDefault(get("WARREN_HTTP_PORT"), "8080")
	}
	dbs := get("DATABASE_URLS")
	if dbs == "" {
		dbs = get("DATABASE_URL")
	}
	if dbs != "" {
		cfg.DatabaseURLs = strings.Split(dbs, ",")
	}
	cfg.Concurrency = bench.EnvInt(get, "WARREN_CONCURRENCY", 50)
	res, runErr := bench.Run(ctx, cfg)
	if res != nil {
		if err := bench.WriteTable(os.Stdout, res); err != nil {
			return err
		}
		if err := bench.WriteJSON(*out, res); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "warren-bench: figures written to", *out)
	}
	return runErr
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
