# @summary The Calipso agent: its package, certificate, agent.toml and the service.
#
# The certificate is issued by calipso::aggregator on the aggregator host; give this class its
# contents (from Hiera, eyaml for the key) or files it can read (`puppet:///…` or local paths).
#
# @param manage_service false where no systemd runs (containers, tests)
class calipso::agent (
  String $aggregator_address,
  String $aggregator_server_name,
  Variant[Sensitive[String], String] $ca_cert_source,
  Variant[Sensitive[String], String] $cert_source,
  Variant[Sensitive[String], String] $key_source,
  Optional[String] $package_source = undef,
  Pattern[/\A\//] $config_dir = '/etc/calipso',
  String $host = $facts['networking']['hostname'],
  String $environment_name = 'default',
  Pattern[/\A\//] $state_file = '/var/lib/calipso-agent/state',
  Boolean $health_enabled = true,
  String $health_interval = '15s',
  Boolean $manage_service = true,
) {
  calipso::package { 'calipso-agent':
    source => $package_source,
  }

  if !defined(File[$config_dir]) {
    file { $config_dir:
      ensure => directory,
      owner  => 'root',
      group  => 'root',
      mode   => '0755',
    }
  }

  $credentials = {
    'ca.pem'    => [$ca_cert_source, '0644'],
    'agent.pem' => [$cert_source, '0644'],
    'agent.key' => [$key_source, '0600'],
  }
  $credentials.each |$file, $what| {
    $given = $what[0]
    # A Sensitive value or PEM text is the content; anything else names a file to copy.
    $is_content = $given =~ Sensitive or $given =~ /BEGIN/
    file { "${config_dir}/${file}":
      ensure    => file,
      owner     => 'root',
      group     => 'root',
      mode      => $what[1],
      content   => if $is_content { $given } else { undef },
      source    => if $is_content { undef } else { $given },
      show_diff => false,
      require   => File[$config_dir],
    }
  }

  file { "${config_dir}/agent.toml":
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0600',
    content => epp('calipso/agent.toml.epp', {
      'config_dir'             => $config_dir,
      'host'                   => $host,
      'environment_name'       => $environment_name,
      'state_file'             => $state_file,
      'aggregator_address'     => $aggregator_address,
      'aggregator_server_name' => $aggregator_server_name,
      'health_enabled'         => $health_enabled,
      'health_interval'        => $health_interval,
    }),
    require => Calipso::Package['calipso-agent'],
  }

  if $manage_service {
    service { 'calipso-agent':
      ensure    => running,
      enable    => true,
      subscribe => [
        File["${config_dir}/agent.toml"],
        File["${config_dir}/ca.pem"],
        File["${config_dir}/agent.pem"],
        File["${config_dir}/agent.key"],
      ],
    }
  }
}
