package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/storage"
)

// errVerifyFailed is the exit of `audit verify` when the chain is broken
// (its problem already printed).
var errVerifyFailed = errors.New("the audit chain does not verify")

// auditCmd is `myelin audit verify|export`.
func auditCmd(args []string) error {
	if len(args) == 0 || (args[0] != "verify" && args[0] != "export") {
		return errors.New("usage: myelin audit verify|export [flags]")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("audit "+sub, flag.ExitOnError)
	var f serverFlags
	f.register(fs)
	since := fs.String("since", "", "export: first time included (RFC 3339; default: the beginning)")
	until := fs.String("until", "", "export: first time excluded (RFC 3339; default: now)")
	_ = fs.Parse(args)
	ctx := context.Background()
	var from, to time.Time
	if sub == "export" {
		var err error
		if from, err = parseTimeFlag("--since", *since, time.UnixMilli(0)); err != nil {
			return err
		}
		if to, err = parseTimeFlag("--until", *until, time.Now()); err != nil {
			return err
		}
		if !from.Before(to) {
			return errors.New("--since must be before --until")
		}
	}
	db, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	if sub == "verify" {
		return auditVerify(ctx, db)
	}
	w := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := audit.Export(ctx, db, from, to, func(r audit.Record) error { return enc.Encode(r) }); err != nil {
		return err
	}
	return w.Flush()
}

func parseTimeFlag(name, s string, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: an RFC 3339 time such as 2026-01-02T15:04:05Z: %w", name, err)
	}
	return t, nil
}

func auditVerify(ctx context.Context, db *storage.DB) error {
	v, err := audit.Verify(ctx, db)
	if err != nil {
		return err
	}
	if v.Problem != nil {
		fmt.Printf("BAD record %d: %s (%d records before it verified)\n", v.Problem.Seq, v.Problem.Reason, v.Records)
		return errVerifyFailed
	}
	fmt.Printf("OK %d records; head %s\n", v.Records, v.Head)
	return nil
}

// auditCLIAction records an admin action of the command line in the store's
// audit trail.
func auditCLIAction(ctx context.Context, db audit.Store, action string, details map[string]any) error {
	l, err := audit.New(audit.Options{Store: db})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.AdminAction(ctx, "cli", audit.AdminAction{Action: action, Via: "cli", Details: details}); err != nil {
		return fmt.Errorf("recording the action in the audit trail: %w", err)
	}
	return nil
}
