// Package joinalias carries the room alias a client joined or knocked by
// (#alias) from the client API to the remote join, in the request's
// context: a fact the data-localization policy classifies the room by
// before asking any server about it.
package joinalias

import (
	"context"
	"strings"
)

type key struct{}

// With returns ctx carrying alias; ctx itself when alias is no alias.
func With(ctx context.Context, alias string) context.Context {
	if !strings.HasPrefix(alias, "#") || len(alias) > 255 {
		return ctx
	}
	return context.WithValue(ctx, key{}, alias)
}

// From is the alias ctx carries ("" for none).
func From(ctx context.Context) string {
	a, _ := ctx.Value(key{}).(string)
	return a
}
