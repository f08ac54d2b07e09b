package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/warrenhq/warren/pkg/autoscale"
	"github.com/warrenhq/warren/pkg/config"
	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/store"
)

// setupAutoscaler adds the autoscaler of cfg to s as a leader-only duty. The
// local backend's fleet is a leader task: it runs while this scheduler
// leads, so that a deposed leader stops its workers (SIGTERM) and the new
// leader runs its own.
func setupAutoscaler(cfg config.Autoscale, s *scheduler.Scheduler, st *store.Store, br autoscale.Broker, out io.Writer, log *slog.Logger) error {
	if cfg.Mode == config.AutoscaleOff {
		return nil
	}
	log = log.With("duty", "autoscale")
	policy := policyOf(cfg)
	var scaler autoscale.Scaler
	switch cfg.Mode {
	case config.AutoscaleLocal:
		cmd := cfg.Command
		if cmd == "" {
			var err error
			if cmd, err = autoscale.ProcfileCommand(cfg.Procfile, cfg.ProcessType); err != nil {
				return fmt.Errorf("config: WARREN_AUTOSCALE_PROCFILE: %w (or set WARREN_AUTOSCALE_COMMAND)", err)
			}
		}
		l, err := autoscale.NewLocal(autoscale.LocalConfig{
			Command: cmd, Name: cfg.ProcessType, BasePort: cfg.Port, StopTimeout: cfg.StopTimeout, Output: out,
		}, s.Registry(), log)
		if err != nil {
			return err
		}
		scaler = l
		s.AddLeaderTask("local_workers", l.Run)
		log.Info("local workers: the scheduler runs them", "command", cmd, "first_port", cfg.Port, "stop_timeout", cfg.StopTimeout.String())
	case config.AutoscaleKubernetes:
		k, err := autoscale.NewKubernetes(autoscale.KubernetesConfig{
			APIServer: cfg.APIServer, Namespace: cfg.Namespace, Deployment: cfg.Deployment, ServiceAccountDir: cfg.ServiceAccountDir,
		})
		if err != nil {
			return fmt.Errorf("config: WARREN_AUTOSCALE_K8S_*: %w", err)
		}
		scaler = k
	case config.AutoscaleHeroku:
		h, err := autoscale.NewHeroku(autoscale.HerokuConfig{
			App: cfg.HerokuApp, APIKey: cfg.HerokuAPIKey, ProcessType: cfg.ProcessType, BaseURL: cfg.HerokuAPI,
		})
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		scaler = h
	}
	a, err := autoscale.New(autoscale.Config{Policy: policy, Queues: cfg.Queues, Window: cfg.Window, Backend: cfg.Mode},
		storeSource{st}, br, scaler, s.Registry(), log)
	if err != nil {
		return err
	}
	s.AddDuty("autoscale", cfg.Interval, a.Tick)
	log.Info("autoscaler on (while this scheduler leads)", "backend", cfg.Mode, "queues", cfg.Queues, "policy", policy.String())
	return nil
}

func policyOf(cfg config.Autoscale) autoscale.Policy {
	return autoscale.Policy{
		Min: cfg.Min, Max: cfg.Max, Interval: cfg.Interval, Concurrency: cfg.Concurrency,
		TargetLatency: cfg.TargetLatency, Headroom: cfg.Headroom, DownWindow: cfg.DownWindow, DownStep: cfg.DownStep,
		IdleAfter: cfg.IdleAfter, DefaultJobTime: cfg.DefaultJobTime, Startup: cfg.Startup,
	}
}

// storeSource gives the autoscaler the store's figures.
type storeSource struct{ st *store.Store }

func (s storeSource) Load(ctx context.Context, queues []string, window time.Duration) ([]autoscale.QueueLoad, error) {
	loads, err := s.st.QueueLoad(ctx, queues, window)
	if err != nil {
		return nil, err // a shard missing would understate the load
	}
	out := make([]autoscale.QueueLoad, len(loads))
	for i, l := range loads {
		out[i] = autoscale.QueueLoad{
			Queue: l.Queue, Ready: int(l.Queued), Running: int(l.Running),
			ArrivalRate: float64(l.Arrived) / window.Seconds(), CompletionRate: float64(l.Finished) / window.Seconds(),
			MeanJobTime: l.MeanJobTime, OldestAge: l.OldestQueued,
		}
	}
	return out, nil
}

// simulate is `scheduler simulate`: it replays the simulator's load traces
// against the policy of the WARREN_AUTOSCALE_* settings and the HPA
// baseline, and prints the comparison as Markdown (docs/AUTOSCALING.md).
// The simulated workers take WARREN_AUTOSCALE_STARTUP to start, 10s when
// it is unset, and run WARREN_AUTOSCALE_CONCURRENCY jobs, 10 when it and
// WARREN_CONCURRENCY are unset. -seeds N checks the goal on seeds 1..N.
func simulate(args []string, getenv config.Getenv, out io.Writer) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(out)
	seeds := fs.Int("seeds", 0, "check the goal on seeds 1..N instead of printing the table of seed 1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.LoadAutoscale(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	p := policyOf(cfg)
	env := autoscale.DefaultSimConfig()
	if getenv("WARREN_AUTOSCALE_STARTUP") == "" {
		p.Startup = env.Startup
	}
	// The traces are sized for workers of the simulator's 10 slots; a
	// worker's own default (50) would leave a fleet of one or two.
	if getenv("WARREN_AUTOSCALE_CONCURRENCY") == "" && getenv("WARREN_CONCURRENCY") == "" {
		p.Concurrency = env.Concurrency
	}
	env.Startup, env.Concurrency, env.Window = p.Startup, p.Concurrency, cfg.Window
	if *seeds <= 0 {
		fmt.Fprintf(out, "Policy: %s.\nSimulated: %d jobs per worker, workers up %v after their order, rates over %v, one worker at the start, seed %d.\n\n",
			p, env.Concurrency, env.Startup, env.Window, env.Seed)
		return autoscale.WriteTable(out, autoscale.Compare(env, p, autoscale.Traces()))
	}
	fmt.Fprintf(out, "| seed | cells that miss the goal |\n|--:|---|\n")
	for seed := 1; seed <= *seeds; seed++ {
		env.Seed = uint64(seed)
		missed := ""
		for _, c := range autoscale.Compare(env, p, autoscale.Traces()) {
			for i, v := range []autoscale.Verdict{c.WorkerSecond, c.P95, c.Flapping} {
				if cell := []string{"worker-s", "p95", "reversals"}[i]; !v.Met() {
					missed += fmt.Sprintf(" %s %s (policy %s, HPA %s);", c.Trace.Name, cell, figure(cell, c.Policy), figure(cell, c.HPA))
				}
			}
		}
		if missed == "" {
			missed = " none"
		}
		fmt.Fprintf(out, "| %d |%s |\n", seed, missed)
	}
	return nil
}

func figure(cell string, r autoscale.Result) string {
	switch cell {
	case "worker-s":
		return fmt.Sprintf("%.0f", r.WorkerSeconds)
	case "p95":
		return r.P95Wait.String()
	default:
		return fmt.Sprint(r.Reversals)
	}
}
