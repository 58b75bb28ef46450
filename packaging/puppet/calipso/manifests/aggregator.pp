# @summary The Calipso aggregator: its package, the deployment CA with the aggregator's and the
#   agents' certificates, the secret key, aggregator.toml and the service.
#
# @param agents host id => environment, for every agent certificate to issue
# @param revoked_hosts hosts whose agent certificates are revoked (one step: list the host here)
# @param manage_service false where no systemd runs (containers, tests)
class calipso::aggregator (
  Optional[String] $package_source = undef,
  Pattern[/\A\//] $config_dir = '/etc/calipso',
  Pattern[/\A\//] $ca_dir = "${config_dir}/ca",
  String $ca_name = 'Calipso deployment CA',
  String $server_name = $facts['networking']['fqdn'],
  Array[String] $server_sans = [],
  String $ingest_listen = '0.0.0.0:7443',
  String $api_listen = '127.0.0.1:8080',
  String $metrics_listen = '127.0.0.1:9464',
  String $store_url = 'sqlite:///var/lib/calipso/calipso.db',
  Optional[String] $history_retention = undef,
  Optional[Sensitive[String]] $admin_password = undef,
  Hash[String, String] $agents = {},
  Array[String] $revoked_hosts = [],
  Boolean $manage_service = true,
) {
  $bin = '/usr/bin/calipso-aggregator'

  calipso::package { 'calipso-aggregator':
    source => $package_source,
  }

  file { $config_dir:
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }

  exec { 'calipso CA':
    command => [$bin, 'ca', 'init', '--dir', $ca_dir, '--name', $ca_name],
    creates => "${ca_dir}/ca.pem",
    require => [Calipso::Package['calipso-aggregator'], File[$config_dir]],
  }

  exec { 'calipso server certificate':
    command => [$bin, 'ca', 'issue-server', '--dir', $ca_dir, '--name', $server_name] + $server_sans.map |$san| { "--san=${san}" },
    creates => "${ca_dir}/server-${server_name}.pem",
    require => Exec['calipso CA'],
  }

  file { "${ca_dir}/server-${server_name}.key":
    owner   => 'root',
    group   => 'calipso',
    mode    => '0640',
    require => Exec['calipso server certificate'],
  }

  $agents.each |$host, $environment| {
    unless $host in $revoked_hosts {
      exec { "calipso agent certificate ${host}":
        command => [$bin, 'ca', 'issue-agent', '--dir', $ca_dir, '--host', $host, '--environment', $environment],
        creates => "${ca_dir}/agent-${host}.pem",
        require => Exec['calipso CA'],
      }
    }
  }

  $revoked_hosts.each |$host| {
    exec { "calipso revoke ${host}":
      command  => "${bin} ca revoke --dir ${ca_dir} --host ${host}",
      # Nothing to do once no certificate of the host is valid.
      unless   => "! ${bin} ca list --dir ${ca_dir} --host ${host} | grep -q ' valid '",
      provider => shell,
      require  => Exec['calipso CA'],
    }
  }

  exec { 'calipso secret key':
    command => [$bin, 'secret-key', '--file', "${config_dir}/secret.key"],
    creates => "${config_dir}/secret.key",
    require => [Calipso::Package['calipso-aggregator'], File[$config_dir]],
  }

  # The aggregator refuses a key anyone but its user can read.
  file { "${config_dir}/secret.key":
    owner   => 'calipso',
    group   => 'calipso',
    mode    => '0600',
    require => Exec['calipso secret key'],
  }

  file { "${config_dir}/aggregator.toml":
    ensure  => file,
    owner   => 'root',
    group   => 'calipso',
    mode    => '0640',
    content => epp('calipso/aggregator.toml.epp', {
      'ca_dir'            => $ca_dir,
      'config_dir'        => $config_dir,
      'server_name'       => $server_name,
      'ingest_listen'     => $ingest_listen,
      'api_listen'        => $api_listen,
      'metrics_listen'    => $metrics_listen,
      'store_url'         => $store_url,
      'history_retention' => $history_retention,
      'admin_password'    => $admin_password,
    }),
    require => Calipso::Package['calipso-aggregator'],
  }

  if $manage_service {
    service { 'calipso-aggregator':
      ensure    => running,
      enable    => true,
      subscribe => [File["${config_dir}/aggregator.toml"], File["${config_dir}/secret.key"]],
      require   => Exec['calipso server certificate'],
    }
  }
}
