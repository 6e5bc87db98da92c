// Command myelin runs the Myelin homeserver and its administrative tasks.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/homeserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

var version = "0.1.0-dev"

const usage = `myelin — a Matrix homeserver

Usage:
  myelin [run] [flags]            run the server (default)
  myelin generate-config [flags]  print a commented config file
  myelin register-user [flags]    create a user
  myelin registration-token create|list [flags]
                                  manage registration tokens stored in the database
  myelin migrate [flags]          apply database migrations and exit
  myelin rotate-signing-key [flags]
                                  retire the federation signing key and make a new
                                  one (run while the server is stopped)
  myelin export-user @user:server [--out FILE] [flags]
                                  write everything the server holds about a local
                                  user as a zip of JSON files (docs/export-user.md)
  myelin audit verify [flags]     check the audit trail's hash chain (exit 1 when broken)
  myelin audit export [--since T] [--until T] [flags]
                                  write the audit records of [since, until) (RFC 3339)
                                  as JSON lines on stdout
  myelin trust-list keygen --out KEYFILE
                                  make an ed25519 key to sign a consortium trust list
  myelin trust-list sign --key KEYFILE --in list.json [--out signed.json]
                                  sign a trust list (docs/federation-policy.md)
  myelin trust-list verify --in signed.json (--config FILE | --issuer I --key-id K --public-key P)
                                  check a signed trust list (exit 1 when refused)
  myelin policy explain --server NAME [--room ROOM] [--json] [flags]
                                  what the residency policy lets flow to a server, and why
  myelin version                  print the version

Run "myelin <command> -h" for the flags of a command.
`

func main() {
	federation.SoftwareVersion = version
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = runCmd(args)
	case "generate-config":
		err = generateConfigCmd(args)
	case "register-user":
		err = registerUserCmd(args)
	case "registration-token":
		err = registrationTokenCmd(args)
	case "migrate":
		err = migrateCmd(args)
	case "rotate-signing-key":
		err = rotateSigningKeyCmd(args)
	case "export-user":
		err = exportUserCmd(args)
	case "audit":
		err = auditCmd(args)
	case "trust-list":
		err = trustListCmd(args)
	case "policy":
		err = policyCmd(args)
	case "version":
		fmt.Println("myelin", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, errVerifyFailed) {
		os.Exit(1) // the problem is printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "myelin:", err)
		os.Exit(1)
	}
}

// serverFlags are shared by every command that needs a configuration.
type serverFlags struct {
	configPath, dataDir, httpAddr, serverName string
}

// parseServerFlags parses the arguments of a command whose only flags are the server flags.
func parseServerFlags(command string, args []string) *serverFlags {
	fs := flag.NewFlagSet(command, flag.ExitOnError)
	f := &serverFlags{}
	f.register(fs)
	_ = fs.Parse(args)
	return f
}

func (f *serverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.configPath, "config", "", "YAML config file (default: zero-config mode)")
	fs.StringVar(&f.dataDir, "data-dir", "", "data directory (default ./data)")
	fs.StringVar(&f.httpAddr, "http", "", "client API listen address (default 127.0.0.1:8008)")
	fs.StringVar(&f.serverName, "server-name", "", "server name (default localhost)")
}

// openStore opens (and migrates) the configured store with one connection,
// for the commands that work on the database without running a server.
func (f *serverFlags) openStore(ctx context.Context) (*storage.DB, error) {
	cfg, err := f.load()
	if err != nil {
		return nil, err
	}
	return storage.Open(ctx, cfg.DatabaseURL(), 1)
}

// load builds the configuration: the file if given, else the zero-config
// defaults; flags override either.
func (f *serverFlags) load() (*config.Config, error) {
	var cfg *config.Config
	if f.configPath != "" {
		var err error
		if cfg, err = config.Load(f.configPath); err != nil {
			return nil, err
		}
	} else {
		cfg = config.Default()
		cfg.ZeroConfig = true
	}
	if f.dataDir != "" {
		cfg.DataDir = f.dataDir
	}
	if f.httpAddr != "" {
		cfg.Listen.HTTP = f.httpAddr
	}
	if f.serverName != "" {
		cfg.ServerName = f.serverName
	}
	return cfg, cfg.Validate()
}

func setupLogging(cfg *config.Config) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Logging.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if cfg.Logging.Format == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	slog.SetDefault(slog.New(h))
}

func runCmd(args []string) error {
	f := parseServerFlags("run", args)
	cfg, err := f.load()
	if err != nil {
		return err
	}
	setupLogging(cfg)
	if cfg.ZeroConfig {
		slog.Warn("zero-config mode: registration is OPEN to anyone who can reach this address; use a config file for a real deployment",
			"listen", cfg.Listen.HTTP, "data_dir", cfg.DataDir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := homeserver.New(ctx, cfg)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	// SIGHUP rereads listen.tls_certificate/tls_key (after a renewal): new
	// handshakes see the new certificate, no connection is dropped.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case err := <-errc:
			srv.Shutdown(context.Background())
			return err
		case <-hup:
			if err := srv.ReloadTLS(); err != nil {
				slog.Error("SIGHUP: TLS certificate not reloaded, the previous one stays in use", "error", err)
			} else if cfg.Listen.Federation != "" {
				slog.Info("SIGHUP: TLS certificate reloaded")
			}
			continue
		case <-ctx.Done():
		}
		break
	}
	slog.Info("shutting down: finishing in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

func generateConfigCmd(args []string) error {
	fs := flag.NewFlagSet("generate-config", flag.ExitOnError)
	name := fs.String("server-name", "example.org", "server name for the config")
	out := fs.String("o", "", "write to this file instead of stdout (refuses to overwrite)")
	_ = fs.Parse(args)
	if err := config.ValidateServerName(*name); err != nil {
		return fmt.Errorf("--server-name: %w", err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	text := config.Template(*name, hex.EncodeToString(secret))
	if *out == "" {
		fmt.Print(text)
		return nil
	}
	file, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer file.Close()
	_, err = file.WriteString(text)
	return err
}

func registerUserCmd(args []string) error {
	fs := flag.NewFlagSet("register-user", flag.ExitOnError)
	var f serverFlags
	f.register(fs)
	user := fs.String("user", "", "localpart of the new user (required)")
	password := fs.String("password", "", "password (default: read from MYELIN_PASSWORD)")
	admin := fs.Bool("admin", false, "make the user a server admin")
	_ = fs.Parse(args)
	if *user == "" {
		return errors.New("--user is required")
	}
	if *password == "" {
		*password = os.Getenv("MYELIN_PASSWORD")
	}
	if *password == "" {
		return errors.New("--password or MYELIN_PASSWORD is required")
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	setupLogging(cfg)
	ctx := context.Background()
	srv, err := homeserver.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer srv.Shutdown(ctx)
	userID, err := srv.Accounts.CreateUser(ctx, *user, *password, *admin)
	if err != nil {
		return err
	}
	if err := auditCLIAction(ctx, srv.DB, "register_user", map[string]any{"user_id": userID, "admin": *admin}); err != nil {
		return err
	}
	fmt.Println("created", userID)
	return nil
}

func migrateCmd(args []string) error {
	f := parseServerFlags("migrate", args)
	ctx := context.Background()
	db, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	v, err := db.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	fmt.Println("schema version", v)
	return nil
}

func rotateSigningKeyCmd(args []string) error {
	f := parseServerFlags("rotate-signing-key", args)
	cfg, err := f.load()
	if err != nil {
		return err
	}
	key, err := federation.RotateSigningKey(cfg.DataDir, time.Now())
	if err != nil {
		return err
	}
	fmt.Println("new signing key", key.ID, "- the old key is kept in old_signing_keys/ and still published")
	return nil
}

func registrationTokenCmd(args []string) error {
	if len(args) == 0 || (args[0] != "create" && args[0] != "list") {
		return errors.New("usage: myelin registration-token create|list [flags]")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("registration-token "+sub, flag.ExitOnError)
	var f serverFlags
	f.register(fs)
	token := fs.String("token", "", "create: the token (default: 16 random characters)")
	uses := fs.Int64("uses", 0, "create: how many registrations it allows (0: unlimited)")
	expires := fs.Duration("expires", 0, "create: lifetime, e.g. 168h (0: never expires)")
	_ = fs.Parse(args)
	ctx := context.Background()
	db, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	if sub == "list" {
		list, err := db.ListRegistrationTokens(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("%-24s %8s %8s %9s  %s\n", "TOKEN", "ALLOWED", "PENDING", "COMPLETED", "EXPIRES")
		for _, t := range list {
			allowed, exp := "-", "never"
			if t.UsesAllowed != nil {
				allowed = fmt.Sprint(*t.UsesAllowed)
			}
			if t.ExpiryTS != nil {
				exp = time.UnixMilli(*t.ExpiryTS).UTC().Format(time.RFC3339)
			}
			fmt.Printf("%-24s %8s %8d %9d  %s\n", t.Token, allowed, t.Pending, t.Completed, exp)
		}
		return nil
	}
	if *token == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		*token = base64.RawURLEncoding.EncodeToString(b)
	}
	if !accounts.ValidRegistrationTokenSyntax(*token) {
		return errors.New("--token: 1-64 characters of A-Z a-z 0-9 . _ ~ -")
	}
	t := storage.RegistrationToken{Token: *token}
	if *uses < 0 || *expires < 0 {
		return errors.New("--uses and --expires must not be negative")
	}
	if *uses > 0 {
		t.UsesAllowed = uses
	}
	if *expires > 0 {
		ts := time.Now().Add(*expires).UnixMilli()
		t.ExpiryTS = &ts
	}
	if err := db.CreateRegistrationToken(ctx, t); err != nil {
		return err
	}
	if err := auditCLIAction(ctx, db, "registration_token.create", map[string]any{"uses_allowed": t.UsesAllowed,
		"expiry_ts": t.ExpiryTS}); err != nil {
		return err
	}
	fmt.Println(*token)
	return nil
}
