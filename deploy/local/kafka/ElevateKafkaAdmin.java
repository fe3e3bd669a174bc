import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;

/**
 * The local broker's operator: SCRAM users and ACLs through Kafka's own Java Admin API,
 * authenticated as the broker's super user. One process stays up per broker and reads
 * tab-separated commands on stdin, answering each command that acts with one line on
 * stdout ("OK ..." or "ERROR <why>"); its logs go to stderr.
 *
 * <pre>
 * USER      name password-file        queue a SCRAM-SHA-512 upsert
 * ACL       principal host permission operation resource name pattern
 *                                       queue an ACL (Kafka's enum names, as LIST prints)
 * APPLY     upsert the queued users, create the queued ACLs            -> OK created
 * RECONCILE as APPLY, then delete every ACL that was not queued       -> OK created deleted
 * LIST      every ACL on the broker, one "ACL\t..." line each           -> OK count
 * </pre>
 *
 * A command answers only once the broker itself reports the change (describeAcls and
 * describeUserScramCredentials are served by the broker that authorizes clients), so a
 * client that connects after "OK" meets the new rules: no test races the metadata log.
 */
public final class ElevateKafkaAdmin {
    private static final int SCRAM_ITERATIONS = 4096; // Kafka's minimum for SHA-512
    private static final long WAIT_MS = 30_000;

    private final Admin admin;
    private final PrintStream out;
    private final Map<String, String> users = new HashMap<>();
    private final Set<AclBinding> acls = new LinkedHashSet<>();

    private ElevateKafkaAdmin(Admin admin, PrintStream out) {
        this.admin = admin;
        this.out = out;
    }

    public static void main(String[] args) throws Exception {
        // stdout is the protocol channel: nothing but replies may reach it.
        PrintStream protocol =
            new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
        System.setOut(System.err);
        Properties props = new Properties();
        try (InputStream in = new FileInputStream(args[1])) {
            props.load(in);
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        // Started beside the broker, it meets a closed port first: retry briskly, not at
        // the default's 1 s backoff.
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "100");
        props.put(AdminClientConfig.RETRY_BACKOFF_MAX_MS_CONFIG, "100");
        try (Admin admin = Admin.create(props)) {
            new ElevateKafkaAdmin(admin, protocol).serve(
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)));
        }
    }

    private void serve(BufferedReader in) throws Exception {
        String line;
        String refused = null; // a queueing command's error: the next action answers it
        while ((line = in.readLine()) != null) {
            String[] f = line.split("\t", -1);
            if (f[0].equals("USER") || f[0].equals("ACL")) {
                try {
                    queue(f);
                } catch (Exception e) {
                    refused = refused != null ? refused : why(e);
                }
                continue;
            }
            try {
                reply(refused != null ? "ERROR " + refused : "OK" + act(f));
            } catch (Exception e) {
                reply("ERROR " + why(e));
            } finally {
                refused = null;
                users.clear();
                acls.clear();
            }
        }
    }

    private static String why(Exception e) {
        Throwable cause = e.getCause() != null ? e.getCause() : e; // unwrap ExecutionException
        return cause.getClass().getSimpleName() + ": " + cause.getMessage();
    }

    private void reply(String line) {
        out.print(line.replace('\n', ' ') + "\n");
        out.flush();
    }

    private void queue(String[] f) throws Exception {
        if (f[0].equals("USER")) {
            users.put(f[1], Files.readString(Path.of(f[2])).strip());
        } else {
            acls.add(binding(f));
        }
    }

    private String act(String[] f) throws Exception {
        switch (f[0]) {
            case "APPLY":
                return " " + apply();
            case "RECONCILE":
                Set<AclBinding> wanted = new HashSet<>(acls);
                int created = apply();
                return " " + created + " " + deleteAllBut(wanted);
            case "LIST":
                Collection<AclBinding> all = describe(AclBindingFilter.ANY);
                for (AclBinding b : all) {
                    reply("ACL\t" + format(b));
                }
                return " " + all.size();
            default:
                throw new IllegalArgumentException("unknown command " + f[0]);
        }
    }

    private static AclBinding binding(String[] f) {
        if (f.length != 8) {
            throw new IllegalArgumentException("ACL takes 7 fields, not " + (f.length - 1));
        }
        return new AclBinding(
            new ResourcePattern(ResourceType.valueOf(f[5]), f[6], PatternType.valueOf(f[7])),
            new AccessControlEntry(
                f[1], f[2], AclOperation.valueOf(f[4]), AclPermissionType.valueOf(f[3])));
    }

    private static String format(AclBinding b) {
        ResourcePattern p = b.pattern();
        AccessControlEntry e = b.entry();
        return String.join("\t", e.principal(), e.host(), e.permissionType().name(),
            e.operation().name(), p.resourceType().name(), p.name(), p.patternType().name());
    }

    private int apply() throws Exception {
        if (!users.isEmpty()) {
            List<UserScramCredentialAlteration> upserts = new ArrayList<>();
            ScramCredentialInfo info =
                new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS);
            users.forEach((name, pw) -> upserts.add(new UserScramCredentialUpsertion(name, info, pw)));
            admin.alterUserScramCredentials(upserts).all().get();
            Set<String> names = new HashSet<>(users.keySet());
            waitFor(() -> admin.describeUserScramCredentials().users().get().containsAll(names),
                "SCRAM users " + names);
        }
        Set<AclBinding> todo = new LinkedHashSet<>(acls);
        if (todo.isEmpty()) {
            return 0;
        }
        admin.createAcls(todo).all().get();
        waitFor(() -> present(todo).containsAll(todo), todo.size() + " ACLs to apply");
        return todo.size();
    }

    private int deleteAllBut(Set<AclBinding> wanted) throws Exception {
        List<AclBindingFilter> doomed = new ArrayList<>();
        Set<AclBinding> gone = new HashSet<>();
        for (AclBinding b : describe(AclBindingFilter.ANY)) {
            if (!wanted.contains(b)) {
                doomed.add(b.toFilter());
                gone.add(b);
            }
        }
        if (!doomed.isEmpty()) {
            admin.deleteAcls(doomed).all().get();
            waitFor(() -> {
                Collection<AclBinding> now = describe(AclBindingFilter.ANY);
                return now.stream().noneMatch(gone::contains);
            }, doomed.size() + " ACLs to go");
        }
        return doomed.size();
    }

    /** What the broker holds of `bindings`: one describe per resource pattern, in flight together. */
    private Set<AclBinding> present(Set<AclBinding> bindings) throws Exception {
        Set<ResourcePattern> patterns = new HashSet<>();
        bindings.forEach(b -> patterns.add(b.pattern()));
        List<KafkaFuture<Collection<AclBinding>>> pending = new ArrayList<>();
        for (ResourcePattern p : patterns) {
            pending.add(admin.describeAcls(
                new AclBindingFilter(p.toFilter(), AccessControlEntryFilter.ANY)).values());
        }
        Set<AclBinding> found = new HashSet<>();
        for (KafkaFuture<Collection<AclBinding>> f : pending) {
            found.addAll(f.get());
        }
        return found;
    }

    private Collection<AclBinding> describe(AclBindingFilter filter) throws Exception {
        return admin.describeAcls(filter).values().get();
    }

    private interface Check {
        boolean done() throws Exception;
    }

    private static void waitFor(Check check, String what) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(WAIT_MS);
        while (!check.done()) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("the broker did not show " + what);
            }
            Thread.sleep(5);
        }
    }
}
