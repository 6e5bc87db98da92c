// Package layering holds no code: its test checks the import rules that keep
// Myelin's data flowing one way (docs/architecture.md, "Import rules").
package layering

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/myelin-chat/myelin/"

type rule struct {
	pkg    string   // a package, or "prefix/..." for it and everything under it
	mayUse []string // the Myelin packages it may import (same patterns; "..." is any)
}

// rules maps a package (or a "prefix/..." pattern) to the Myelin packages it
// may import. The first matching entry applies; a package no entry matches
// fails the test, so a new package has to take its place in the layers.
var rules = []rule{
	// Followers tail the store's stream.
	{"internal/follower", []string{"storage", "internal/recovery"}},
	// Utilities: standard library and third-party code only, or each other.
	{"internal/...", []string{"internal/..."}},
	// The store knows nothing above it.
	{"storage", []string{"internal/..."}},
	// Read-side helpers shared by every reader.
	{"visibility", []string{"storage", "internal/..."}},
	{"clientevent", []string{"storage", "internal/..."}},
	// Pure room logic.
	{"roomserver/stateres", []string{"roomserver/authrules", "internal/..."}},
	{"roomserver/authrules", []string{"internal/..."}},
	// The writer: never federation, never another module, never the client API.
	{"roomserver", []string{"roomserver/stateres", "roomserver/authrules", "storage", "internal/..."}},
	// Modules: over the store and the read helpers; the few module-to-module
	// calls are listed one by one.
	{"roomview", []string{"roomserver", "visibility", "clientevent", "storage", "internal/..."}},
	{"directory", []string{"roomserver", "roomview", "storage", "internal/..."}},
	{"servernotices", []string{"roomserver", "storage", "internal/..."}},
	{"push", []string{"visibility", "clientevent", "storage", "internal/..."}},
	{"ephemeral", []string{"storage", "internal/..."}},
	{"accounts", []string{"storage", "internal/..."}},
	{"keyserver", []string{"storage", "internal/..."}},
	{"mediaapi", []string{"residency", "storage", "internal/..."}},
	// Message retention: the purge over the store (media deletion through a small interface).
	{"retention", []string{"storage", "internal/..."}},
	{"userdirectory", []string{"storage", "internal/..."}},
	// myelin export-user: reads the store, renders with the read helper.
	{"userexport", []string{"clientevent", "storage", "internal/..."}},
	{"federation", []string{"storage", "internal/..."}},
	// The data-localization policy: a leaf over the store that the boundary
	// modules ask (per server, room and data kind).
	{"residency", []string{"storage", "internal/..."}},
	// The audit trail: a leaf over the store, recorded to by the boundary
	// modules (federationsender, ingest, clientapi) and the CLI.
	{"audit", []string{"residency", "storage", "internal/..."}},
	// The federation sender: the transport's client and policy, the store.
	{"federationsender", []string{"federation", "audit", "residency", "storage", "internal/..."}},
	// The server-server room handlers: over the transport and the room modules.
	{"federationapi", []string{"federation", "roomserver", "roomview", "directory", "keyserver", "clientevent", "residency", "audit", "storage", "internal/..."}},
	// Inbound PDUs: the writer and the store; the transport only through its
	// own small interfaces, filled in by the assembly.
	{"ingest", []string{"roomserver", "audit", "residency", "storage", "internal/..."}},
	// Backfill: the transport's client and the writer's ImportBackfill
	// through its own small interfaces, the store.
	{"backfill", []string{"storage", "internal/..."}},
	// Remote joins: the transport's client over the writer.
	{"remotejoin", []string{"roomserver", "residency", "internal/..."}},
	// The client API: handlers over modules; /sync readers never the writer.
	{"clientapi/syncv2", []string{"accounts", "keyserver", "ephemeral", "push", "visibility", "clientevent", "roomview", "storage", "internal/..."}},
	{"clientapi/slidingsync", []string{"clientapi/syncv2", "accounts", "keyserver", "ephemeral", "push", "visibility", "clientevent", "roomview", "storage", "internal/..."}},
	{"clientapi", []string{"accounts", "keyserver", "roomserver", "roomview", "directory", "ephemeral", "push", "mediaapi",
		"servernotices", "userdirectory", "audit", "residency", "internal/..."}},
	// Assembly.
	{"homeserver/testserver", []string{"homeserver", "internal/..."}},
	{"homeserver", []string{"..."}},
	{"cmd/...", []string{"..."}},
	{"tests", []string{"..."}},
}

func matches(pattern, pkg string) bool {
	if pattern == "..." {
		return true
	}
	if p, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == p || strings.HasPrefix(pkg, p+"/")
	}
	return pkg == pattern
}

// imports reads the Myelin imports of every non-test Go file under root,
// keyed by package directory relative to root.
func imports(t *testing.T, root string) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		if out[pkg] == nil {
			out[pkg] = map[string]bool{}
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if dep, ok := strings.CutPrefix(p, module); ok {
				out[pkg][dep] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	for pkg, deps := range imports(t, root) {
		i := slices.IndexFunc(rules, func(r rule) bool { return matches(r.pkg, pkg) })
		if i < 0 {
			t.Errorf("package %s has no place in the import rules (add it to rules and to docs/architecture.md)", pkg)
			continue
		}
		for dep := range deps {
			if !slices.ContainsFunc(rules[i].mayUse, func(p string) bool { return matches(p, dep) }) {
				t.Errorf("%s imports %s, which the import rules do not allow", pkg, dep)
			}
		}
	}
}
