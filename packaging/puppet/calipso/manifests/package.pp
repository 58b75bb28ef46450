# @summary The package `name`, from a local file when `source` names one (a .deb or .rpm that
#   packaging/build made), else from the configured repositories.
# @api private
define calipso::package (
  Optional[String] $source = undef,
) {
  if $source {
    $provider = $source ? {
      /\.rpm$/ => 'rpm',
      default  => 'dpkg',
    }
    package { $name:
      ensure   => installed,
      provider => $provider,
      source   => $source,
    }
  } else {
    package { $name:
      ensure => installed,
    }
  }
}
