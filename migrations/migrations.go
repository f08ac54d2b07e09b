// Package migrations embeds Warren's SQL migrations. They are applied to every
// shard by the Procfile's release command (`scheduler migrate`), never on boot.
package migrations

import "embed"

// FS holds the numbered migration files (golang-migrate naming).
//
//go:embed *.sql
var FS embed.FS
