//! A real OpenLDAP `slapd` (Debian's package) in a temp directory, on a free loopback port,
//! loaded with a few users and groups; stopped when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

pub const SUFFIX: &str = "dc=calipso,dc=test";

/// A running directory with `alice` (in group `calipso-admins`), `bob` (in `lab-viewers`),
/// passwords `alice-password` and `bob-password`.
#[derive(Debug)]
pub struct TestDirectory {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

const ENTRIES: &str = "\
dn: dc=calipso,dc=test
objectClass: dcObject
objectClass: organization
o: Calipso test
dc: calipso

dn: ou=people,dc=calipso,dc=test
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=calipso,dc=test
objectClass: organizationalUnit
ou: groups

dn: uid=alice,ou=people,dc=calipso,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Admin
userPassword: alice-password

dn: uid=bob,ou=people,dc=calipso,dc=test
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Viewer
userPassword: bob-password

dn: cn=calipso-admins,ou=groups,dc=calipso,dc=test
objectClass: groupOfNames
cn: calipso-admins
member: uid=alice,ou=people,dc=calipso,dc=test

dn: cn=lab-viewers,ou=groups,dc=calipso,dc=test
objectClass: groupOfNames
cn: lab-viewers
member: uid=bob,ou=people,dc=calipso,dc=test
";

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         include /etc/ldap/schema/nis.schema\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         pidfile {dir}/slapd.pid\n\
         access to attrs=userPassword by anonymous auth by self read by * none\n\
         access to * by users read by * none\n\
         database mdb\n\
         maxsize 67108864\n\
         suffix \"{SUFFIX}\"\n\
         rootdn \"cn=admin,{SUFFIX}\"\n\
         directory {dir}/data\n"
    )
}

impl TestDirectory {
    pub fn start() -> anyhow::Result<Self> {
        let slapd = Path::new("/usr/sbin/slapd");
        anyhow::ensure!(
            slapd.exists(),
            "slapd is not installed: `apt-get install slapd` (tests/run does)"
        );
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("data"))?;
        let conf = dir.path().join("slapd.conf");
        std::fs::write(&conf, config(dir.path()))?;
        let ldif = dir.path().join("entries.ldif");
        std::fs::write(&ldif, ENTRIES)?;
        let loaded = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif)
            .output()
            .context("running slapadd")?;
        anyhow::ensure!(
            loaded.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let port = free_port()?;
        let url = format!("ldap://127.0.0.1:{port}");
        // -d 0 keeps slapd in the foreground, so it is our child and dies with us.
        let child = Command::new(slapd)
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!("{url}/"))
            .arg("-d")
            .arg("0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting slapd")?;
        let mut directory = TestDirectory {
            url,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = directory.child.try_wait()? {
                anyhow::bail!("slapd exited with {status}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "slapd did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(directory)
    }
}

impl Drop for TestDirectory {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
