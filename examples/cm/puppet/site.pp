# Applied on every web server at launch. The stratus_* facts come from the launch context.
$root = $facts['stratus_server_root']

file { ["${root}/etc", "${root}/etc/stratus"]:
  ensure => directory,
}

file { "${root}/etc/stratus/puppet-facts.txt":
  ensure  => file,
  mode    => '0644',
  content => "name=${facts['stratus_server_name']}\naddress=${facts['stratus_server_address']}\ntier=${facts['stratus_tier']}\nrun_list=${facts['stratus_run_list']}\ngreeting=${facts['stratus_setting_greeting']}\n",
}
